"""Moving and editing queued jobs on the real stack: a job moved to a higher priority, to the
front of its queue or after another job generates in its new place, once; a job a worker
claims while it is being moved stays as it was and the new run is cancelled (never twice,
never lost); a staged job cannot be moved; an edit replaces the queued job by a re-validated
one with its own id in the same place, and a bad edit changes nothing."""

from __future__ import annotations

import asyncio

import pytest
from prefect.client.schemas.objects import StateType
from typer.testing import CliRunner

from stablenew import JobService
from stablenew.cli.app import app
from stablenew.errors import JobNotQueued, PackError
from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services import queue_control
from stablenew.orchestration.services.submission import Lineage
from tests.orchestration.conftest import LiveStack, make_record, wait_for

pytestmark = pytest.mark.slow
runner = CliRunner()


def _cli(live: LiveStack, *args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"PREFECT_API_URL": live.prefect_url})
    return result.exit_code, result.output


def _finish(service: JobService, job_ids: list[str]) -> None:
    wait_for(
        lambda: all(service.status(j).status.is_terminal for j in job_ids),
        timeout=90,
        what="the jobs to end",
    )


def _generated(live: LiveStack) -> list[str]:
    return [e["prompt"] for e in live.stats()["events"]]


async def _run_info(flow_run_id: str) -> tuple[StateType | None, Lineage, int]:
    async with prefect_client() as client:
        run = await client.read_flow_run(flow_run_id)
    return run.state_type, Lineage.of(run), int(run.parameters["record"]["steps"])


def test_a_job_moved_to_high_generates_before_the_low_ones_once(live: LiveStack) -> None:
    service = JobService()
    service.pause()
    low = service.submit([make_record(f"qc low {i}") for i in range(3)], "low")
    (moved,) = service.submit([make_record("moved up")], "low")
    old_run = service.status(moved).flow_run_id

    result = service.move(moved, priority="high")
    assert result.done
    assert result.priority == "high"
    assert result.job_id == moved
    assert result.old_flow_run_id == old_run != result.flow_run_id
    pending = service.queue_state().pending
    assert next((r.job_id, r.priority) for r in pending) == (moved, "high")
    assert [r.job_id for r in pending].count(moved) == 1
    assert asyncio.run(_run_info(old_run))[0] == StateType.CANCELLED
    _, lineage, _ = asyncio.run(_run_info(result.flow_run_id))
    assert lineage == Lineage("move", parent_flow_run_id=old_run)

    service.resume()
    _finish(service, [*low, moved])
    prompts = _generated(live)
    assert prompts.count("moved up") == 1
    assert prompts.index("moved up") < min(prompts.index(f"qc low {i}") for i in range(3))
    assert service.status(moved).status is JobStatus.COMPLETED


def test_move_to_front_and_after_another_job(live: LiveStack) -> None:
    service = JobService()
    service.pause()
    # Separate submissions: room between them for --after.
    a, b, c, d = (service.submit([make_record(f"queue {n}")])[0] for n in "abcd")
    assert service.move(d, front=True).done
    assert service.move(c, after=a).done
    assert [r.job_id for r in service.queue_state().pending] == [d, a, c, b]
    code, out = _cli(live, "queue", "move", b, "--front")
    assert code == 0, out
    assert "moved" in out
    assert [r.job_id for r in service.queue_state().pending] == [b, d, a, c]

    service.resume()
    _finish(service, [a, b, c, d])
    assert _generated(live) == ["queue b", "queue d", "queue a", "queue c"]


def test_a_job_claimed_while_moving_stays_and_the_new_run_is_cancelled(live: LiveStack) -> None:
    service = JobService()
    service.pause()
    (job,) = service.submit([make_record("claimed meanwhile")], "low")
    old_run = service.status(job).flow_run_id

    async def worker_claims() -> None:
        # Between the new run's creation and the old one's cancel, a worker takes the old one.
        await service.aset_paused(False)
        async with prefect_client() as client:
            for _ in range(300):
                if (await client.read_flow_run(old_run)).state_type != StateType.SCHEDULED:
                    return
                await asyncio.sleep(0.05)
        raise AssertionError("the worker did not claim the old run")

    async def move() -> queue_control.Replaced:
        async with prefect_client() as client:
            return await queue_control.move(
                service, client, job, priority="urgent", between=worker_claims
            )

    result = asyncio.run(move())
    assert not result.done
    assert result.flow_run_id == old_run
    assert "already running" in result.message
    wait_for(
        lambda: asyncio.run(_run_info(old_run))[0] == StateType.COMPLETED,
        timeout=90,
        what="the old run to complete",
    )

    async def states() -> list[StateType | None]:
        async with prefect_client() as client:
            return [r.state_type for r in await service._runs_for_job(client, job)]

    # The reserve made for the move is gone: the old run is the job's only and latest run.
    assert asyncio.run(states()) == [StateType.COMPLETED]
    assert service.status(job).flow_run_id == old_run
    assert _generated(live).count("claimed meanwhile") == 1


def test_a_staged_job_cannot_be_moved_or_edited(live: LiveStack) -> None:
    service = JobService()
    live.sim("POST", "timing", seconds_per_step=0.3)  # ~3 s a job: the view holds still
    ids = service.submit([make_record(f"staged {i}", steps=10) for i in range(3)])
    state = wait_for(
        lambda: (s := service.queue_state()).staged and s, what="a job staged behind the GPU"
    )
    staged = state.staged[0].job_id
    with pytest.raises(JobNotQueued, match="already running"):
        service.move(staged, front=True)
    code, out = _cli(live, "queue", "edit", staged, "--set", "steps=5")
    assert code == 2, out
    assert "not queued" in out
    service.cancel_pack("itest")
    _finish(service, ids)

    async def runs() -> int:
        async with prefect_client() as client:
            return len(await service._runs_for_job(client, staged))

    assert asyncio.run(runs()) == 1  # nothing was created for it


def test_edit_replaces_the_queued_job_in_place_and_a_bad_edit_changes_nothing(
    live: LiveStack,
) -> None:
    service = JobService()
    service.pause()
    a, b = (service.submit([make_record(f"edit {n}")])[0] for n in "ab")
    before = [(r.job_id, r.flow_run_id) for r in service.queue_state().pending]

    with pytest.raises(PackError, match="less than or equal to 500"):
        service.edit(a, {"steps": 9999})
    code, out = _cli(live, "queue", "edit", a, "--set", "stpes=5")
    assert code == 2, out
    assert "did you mean 'steps'?" in out
    assert [(r.job_id, r.flow_run_id) for r in service.queue_state().pending] == before

    old_run = service.status(a).flow_run_id
    result = service.edit(a, {"steps": 5})
    assert result.done
    assert result.job_id != a
    assert [r.job_id for r in service.queue_state().pending] == [result.job_id, b]
    _state, lineage, steps = asyncio.run(_run_info(result.flow_run_id))
    assert (lineage, steps) == (Lineage("edit", parent_flow_run_id=old_run, parent_job_id=a), 5)
    assert asyncio.run(_run_info(old_run))[0] == StateType.CANCELLED

    service.resume()
    _finish(service, [result.job_id, b])
    assert _generated(live) == ["edit a", "edit b"]
    code, out = _cli(live, "queue", "edit", b, "--set", "steps=6")
    assert code == 2, out
    assert "completed, not queued" in out
