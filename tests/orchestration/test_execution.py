"""Jobs as Prefect flow runs, end to end on a real server, worker and simulator.

Verifies priority order and FIFO, pause/resume, cancelling queued and running jobs (the
simulator sees the interrupt), retry of transient WebUI faults, fast failure on rejected
requests, one job at a time per worker, and the files a job writes.
"""

from __future__ import annotations

import asyncio
import itertools
import json
import time

import pytest
from PIL import Image
from prefect.client.schemas.objects import FlowRun
from prefect.states import Cancelled, Pending, Running

from stablenew.errors import SubmissionError
from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services import bulk_cancel
from stablenew.orchestration.services.jobs import JobService
from tests.orchestration.conftest import LiveStack, make_record, wait_for

pytestmark = pytest.mark.slow


def _wait_terminal(
    service: JobService, job_ids: list[str], timeout: float = 90.0
) -> dict[str, JobStatus]:
    def done() -> dict[str, JobStatus] | None:
        statuses = {j: service.status(j).status for j in job_ids}
        return statuses if all(s.is_terminal for s in statuses.values()) else None

    return wait_for(done, timeout=timeout, what=f"{len(job_ids)} job(s) to finish")  # type: ignore[no-any-return]


def _started_prompts(live: LiveStack) -> list[str]:
    events = sorted(live.stats()["events"], key=lambda e: e["start"])
    return [e["prompt"] for e in events if e["kind"] == "txt2img"]


def test_priority_order_and_fifo_within_a_queue(live: LiveStack) -> None:
    service = JobService()
    service.pause()
    low = [make_record(f"low {i}") for i in range(3)]
    normal = [make_record(f"normal {i}") for i in range(2)]
    urgent = [make_record("urgent 0")]
    ids = service.submit(low, "low") + service.submit(normal, "normal") + service.run_now(urgent)
    order = [r.job_id for r in service.queue_state().pending]
    assert order == [r.job_id for r in urgent + normal + low]
    service.resume()
    statuses = _wait_terminal(service, ids)
    assert set(statuses.values()) == {JobStatus.COMPLETED}
    assert _started_prompts(live) == ["urgent 0", "normal 0", "normal 1", "low 0", "low 1", "low 2"]


def test_pause_holds_everything_then_resume_drains(live: LiveStack) -> None:
    service = JobService()
    service.pause()
    assert service.queue_state().status == "paused"
    ids = service.submit([make_record(f"paused {i}") for i in range(2)])
    # Bounded observation window: the worker polls every 0.5 s, so 3 s is six chances.
    time.sleep(3)
    assert {service.status(j).status for j in ids} == {JobStatus.QUEUED}
    assert live.stats()["events"] == []
    service.resume()
    assert set(_wait_terminal(service, ids).values()) == {JobStatus.COMPLETED}


def test_cancel_queued_job_never_starts(live: LiveStack) -> None:
    service = JobService()
    service.pause()
    keep, drop = make_record("kept"), make_record("dropped")
    service.submit([keep, drop])
    assert service.cancel(drop.job_id).status == JobStatus.CANCELLED
    service.resume()
    _wait_terminal(service, [keep.job_id])
    assert service.status(drop.job_id).status == JobStatus.CANCELLED
    assert "dropped" not in _started_prompts(live)


def test_cancel_from_a_stale_listing_does_not_end_a_started_run_behind_its_worker(
    live: LiveStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without our cancel route (another Prefect server), cancel_pack lists the pack's runs,
    # then cancels them one by one; a run listed as queued may be started by a worker in
    # between. It must then get CANCELLING (which the worker acts on: interrupt, end
    # CANCELLED), not a CANCELLED the worker never hears of while it renders the job anyway.
    monkeypatch.setattr(bulk_cancel, "CANCEL_ROUTE", "/stablenew/absent/cancel")
    monkeypatch.setattr(bulk_cancel, "SETTLE_SECONDS", 0.0)  # no worker ends it: we play it
    service = JobService()
    service.pause()
    rec = make_record("started meanwhile")
    service.submit([rec])

    async def listing_then_start(*args: object, **kwargs: object) -> list[FlowRun]:
        listed = await original(*args, **kwargs)
        async with prefect_client() as client:
            for run in listed:  # what a worker does while the listing is in hand
                await client.set_flow_run_state(run.id, Pending())
                await client.set_flow_run_state(run.id, Running())
        return listed

    original = bulk_cancel.pool_runs
    monkeypatch.setattr(bulk_cancel, "pool_runs", listing_then_start)
    (ref,) = service.cancel_pack("itest")
    assert ref.status == JobStatus.CANCELLING
    monkeypatch.setattr(bulk_cancel, "pool_runs", original)
    still_queued = make_record("still queued")
    service.submit([still_queued])
    (ref,) = service.cancel_pack("itest")
    assert ref.job_id == still_queued.job_id
    assert ref.status == JobStatus.CANCELLED  # never claimed: straight to CANCELLED
    # No worker runs the first one (we played the worker): end it as the worker would.
    asyncio.run(_force_cancelled(service.status(rec.job_id).flow_run_id))


async def _force_cancelled(flow_run_id: str) -> None:
    async with prefect_client() as client:
        await client.set_flow_run_state(flow_run_id, Cancelled(), force=True)


def test_cancel_running_job_interrupts_the_webui(live: LiveStack) -> None:
    service = JobService()
    live.sim("POST", "timing", seconds_per_step=0.5)
    rec = make_record("long job", steps=40)
    service.submit([rec])
    wait_for(lambda: service.status(rec.job_id).status == JobStatus.RUNNING, what="running")
    wait_for(lambda: live.stats()["busy"], what="the simulator to start generating")
    service.cancel(rec.job_id)
    final = _wait_terminal(service, [rec.job_id], timeout=30)
    assert final[rec.job_id] == JobStatus.CANCELLED
    assert live.stats()["counters"]["interrupts"] >= 1


def test_transient_fault_is_retried_then_succeeds(live: LiveStack) -> None:
    service = JobService()
    live.sim("POST", "faults", fail_next=1)
    rec = make_record("flaky")
    service.submit([rec])
    assert _wait_terminal(service, [rec.job_id])[rec.job_id] == JobStatus.COMPLETED
    assert live.stats()["counters"]["requests"] >= 2


def test_rejected_request_fails_fast_with_the_field(live: LiveStack) -> None:
    service = JobService()
    live.sim("POST", "faults", reject_next=1)
    rec = make_record("rejected")
    service.submit([rec])
    _wait_terminal(service, [rec.job_id])
    ref = service.status(rec.job_id)
    assert ref.status == JobStatus.FAILED
    assert ref.message is not None
    assert "sampler_name" in ref.message
    assert live.stats()["counters"]["requests"] == 1  # not retried


def test_unknown_model_fails_before_any_generation(live: LiveStack) -> None:
    service = JobService()
    rec = make_record("wrong model", model="sd-typo-v9")
    service.submit([rec])
    _wait_terminal(service, [rec.job_id])
    ref = service.status(rec.job_id)
    assert ref.status == JobStatus.FAILED
    assert ref.message is not None
    assert "sd-typo-v9" in ref.message
    assert live.stats()["counters"]["requests"] == 0


def test_one_worker_runs_one_job_at_a_time(live: LiveStack) -> None:
    service = JobService()
    ids = service.submit([make_record(f"serial {i}") for i in range(4)])
    _wait_terminal(service, ids)
    events = sorted(live.stats()["events"], key=lambda e: e["start"])
    assert len(events) == 4
    for before, after in itertools.pairwise(events):
        assert after["start"] >= before["end"]


def test_outputs_and_sidecar(live: LiveStack) -> None:
    service = JobService()
    rec = make_record("a lighthouse at dusk", size=64)
    service.submit([rec])
    assert _wait_terminal(service, [rec.job_id])[rec.job_id] == JobStatus.COMPLETED
    run_id = service.status(rec.job_id).flow_run_id
    latest = live.output_root / "itest" / rec.job_id / "latest"
    sidecar = json.loads((latest / "record.json").read_text())
    assert sidecar == json.loads(rec.model_dump_json())
    pngs = sorted(latest.glob("*.png"))
    assert len(pngs) == rec.batch_size
    with Image.open(pngs[0]) as img:
        assert img.size == (64, 64)
        assert img.info["parameters"].startswith("a lighthouse at dusk\n")
    result = json.loads((latest / "result.json").read_text())
    assert result["flow_run_id"] == run_id
    assert result["attempt"] == 1
    assert result["images"][0]["seed"] == rec.seed
    assert all(
        p.resolve().is_relative_to(live.output_root.resolve()) for p in latest.parent.rglob("*")
    )


def test_two_runs_of_a_job_never_share_an_output_file(live: LiveStack) -> None:
    service = JobService()
    rec = make_record("a lighthouse, twice", size=64)
    first = service.submit([rec])
    _wait_terminal(service, first)
    again = service.submit([rec], allow_duplicates=True)
    _wait_terminal(service, again)
    job = live.output_root / "itest" / rec.job_id
    folders = sorted(p for p in job.iterdir() if p.is_dir() and not p.is_symlink())
    assert len(folders) == 2
    files = [f for d in folders for f in d.glob("*.png")]
    assert len(files) == len(set(files)) == 2 * rec.batch_size
    made_by = {json.loads((d / "result.json").read_text())["flow_run_id"] for d in folders}
    assert len(made_by) == 2
    assert (job / "latest").resolve() == folders[-1].resolve()
    assert service.status(rec.job_id).flow_run_id in made_by


def test_duplicate_submission_is_refused_unless_asked(live: LiveStack) -> None:
    service = JobService()
    service.pause()
    rec = make_record("only once")
    service.submit([rec])
    with pytest.raises(SubmissionError, match="already submitted"):
        service.submit([rec, make_record("innocent bystander")])
    # All-or-nothing: the bystander created before the refusal was rolled back.
    assert service.status(make_record("innocent bystander").job_id).status == JobStatus.CANCELLED
    again = service.submit([rec], allow_duplicates=True)
    assert again == [rec.job_id]


def test_webui_down_holds_jobs_queued_and_says_why(live: LiveStack) -> None:
    """Jobs submitted while the worker holds stay queued. (A WebUI that answered is probed
    once a second, so a job claimed in the second before it starts refusing can still fail
    with the WebUI's 401: that is why the job goes in after the hold is seen.)"""
    service = JobService()
    live.sim("POST", "faults", reject_auth=True)  # the worker's WebUI refuses it
    state = wait_for(lambda: (s := service.queue_state()).holds and s, what="a hold reason")
    assert "refuses" in state.holds[0]
    rec = make_record("held back")
    service.submit([rec])
    time.sleep(1.5)  # several polls: still not drained into FAILED
    assert service.status(rec.job_id).status == JobStatus.QUEUED
    live.sim("POST", "faults", reject_auth=False)
    assert _wait_terminal(service, [rec.job_id])[rec.job_id] == JobStatus.COMPLETED
    assert wait_for(lambda: not service.queue_state().holds, what="the hold to clear")


def test_cancel_current_stops_only_the_job_on_the_gpu(live: LiveStack) -> None:
    service = JobService()
    live.sim("POST", "timing", seconds_per_step=0.6)
    recs = [make_record(f"current {i}", steps=10) for i in range(3)]
    service.submit(recs)

    def one_generating_one_staged() -> bool:
        state = service.queue_state()
        return bool(live.stats()["busy"]) and len(state.generating) == 1 and bool(state.staged)

    # With lookahead the worker claims runs ahead; only one of them may be generating.
    wait_for(one_generating_one_staged, what="one job generating and another claimed")
    # Task runs reach the server as events, so the rendering one may take a moment to show.
    cancelled = wait_for(service.cancel_current, what="the job on the GPU to be found")
    assert len(cancelled) == 1
    statuses = _wait_terminal(service, [r.job_id for r in recs])
    assert sorted(s.value for s in statuses.values()) == ["cancelled", "completed", "completed"]
    assert statuses[cancelled[0].job_id] == JobStatus.CANCELLED
    assert live.stats()["counters"]["interrupts"] == 1


def test_jobs_sharing_a_checkpoint_render_together(live: LiveStack) -> None:
    service = JobService()
    service.pause()
    models = ["v1-5-pruned-emaonly", "dreamshaper_8"] * 3
    records = [make_record(f"mixed {i}", model=m) for i, m in enumerate(models)]
    ids = service.submit(records)
    service.resume()
    assert set(_wait_terminal(service, ids).values()) == {JobStatus.COMPLETED}

    events = sorted(live.stats()["events"], key=lambda e: e["start"])
    assert [e["prompt"] for e in events] == [f"mixed {i}" for i in (0, 2, 4, 1, 3, 5)]
    assert [e["model"].startswith("dreamshaper_8") for e in events] == [False] * 3 + [True] * 3
    # Interleaved, the GPU would have switched checkpoints before every job but the first.
    assert live.stats()["counters"]["model_switches"] <= 2


def test_urgent_job_overtakes_a_full_lookahead(live: LiveStack) -> None:
    service = JobService()
    # 150 steps at the simulator's 0.01 s a step: 1.5 s a job, so the worker's lookahead
    # (1 rendering + 4 staged) is full of low jobs when the urgent one arrives.
    low = [make_record(f"backlog {i}", steps=150) for i in range(7)]
    service.submit(low, "low")
    wait_for(lambda: live.stats()["events"], timeout=60, what="the first backlog job")
    urgent = make_record("urgent jump")
    submitted_at = time.time()
    service.run_now([urgent])
    statuses = _wait_terminal(service, [r.job_id for r in [*low, urgent]], timeout=120)
    assert set(statuses.values()) == {JobStatus.COMPLETED}

    events = sorted(live.stats()["events"], key=lambda e: e["start"])
    prompts = [e["prompt"] for e in events]
    position = prompts.index("urgent jump")
    overtaken_by = [e["prompt"] for e in events[:position] if e["start"] > submitted_at]
    # At most the job the GPU had already been handed may start in between: not the
    # staged batch behind it.
    assert len(overtaken_by) <= 1, overtaken_by
    assert position < len(prompts) - 2
