"""Killing and stopping workers: every job completes exactly once, nothing stays claimed.

A Prefect server of its own (workers die here), real worker processes and simulators; failure
detection is sped up (heartbeat 1 s, dead after 4 s) so each case takes seconds, not minutes.
"""

from __future__ import annotations

import asyncio
import logging
import signal
import time
from collections import Counter
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from prefect.client.schemas.objects import StateType
from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew.history import SqliteHistoryStore
from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services.exporter import sync
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.submission import Lineage
from stablenew.orchestration.worker import cancellation
from tests.orchestration.conftest import make_record
from tests.orchestration.faults import (
    FaultLab,
    completions_per_job,
    fault_lab,
    kill,
    pack_runs,
    runs_of,
    states,
    wait,
)


@pytest.fixture(scope="module")
def lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultLab]:
    with fault_lab(tmp_path_factory.mktemp("faults")) as lab:
        yield lab


@pytest.fixture
def api(lab: FaultLab) -> Iterator[FaultLab]:
    with temporary_settings(updates={PREFECT_API_URL: lab.api}):
        yield lab
    lab.stop_all()


def submit(pack: str, jobs: int) -> list[str]:
    records = [make_record(f"{pack} job {i}", pack_id=pack) for i in range(jobs)]
    return JobService().submit(records, "normal")


def claimed_by(pack: str, worker: str) -> int:
    """Runs of the pack ``worker`` holds (claimed: PENDING or RUNNING)."""
    from stablenew.orchestration.worker.recovery import claimant

    return sum(1 for r in runs_of(pack) if claimant(r) == worker)


async def _sync(store: SqliteHistoryStore) -> None:
    async with prefect_client() as client:
        await sync(client, store)


def test_sigkill_mid_job_with_full_lookahead_then_a_new_worker(
    api: FaultLab, tmp_path: Path
) -> None:
    sim = api.start_sim(seconds_per_image=1.0)
    pack = "kill-lookahead"
    submit(pack, 8)
    first = api.start_worker("doomed", sim.url, lookahead=4)
    # Mid-job with a full lookahead: one generating, four more claimed behind it.
    wait(lambda: sim.busy() and claimed_by(pack, "doomed") >= 5, 60, "a full lookahead")
    kill(first, signal.SIGKILL)
    held = claimed_by(pack, "doomed")
    api.start_worker("rescuer", sim.url)
    api.wait_settled(pack, 8, 90, "every job to complete after the kill")

    assert set(completions_per_job(pack).values()) == {1}, "a job completed twice"
    runs = runs_of(pack)
    crashed = [r for r in runs if r.state and r.state.type == StateType.CRASHED]
    assert len(crashed) == 1, "exactly the generating run is CRASHED"
    assert "doomed stopped heartbeating" in (crashed[0].state.message or "")
    reruns = [r for r in runs if Lineage.of(r).reason == "recovery"]
    assert [Lineage.of(r).parent_flow_run_id for r in reruns] == [str(crashed[0].id)]
    # The staged ones went back to the queue (and ran from there).
    assert f"{held - 1} requeued, 1 crashed (1 re-run)" in api.log("worker-rescuer")

    # The history tells it: the crash with its reason, the re-run, and each requeue.
    with SqliteHistoryStore(tmp_path / "history.db") as store:
        asyncio.run(_sync(store))
        crashed_job = crashed[0].parameters["record"]["job_id"]
        job = store.get_job(crashed_job)
        assert job.status == JobStatus.COMPLETED
        runs_of_job = store.runs_of(crashed_job)
        assert [r.reason for r in runs_of_job] == ["submit", "recovery"]
        assert "doomed stopped heartbeating" in (runs_of_job[0].error or "")
        requeues = [
            t
            for r in runs
            if "requeued" in r.tags
            for t in store.transitions(r.parameters["record"]["job_id"], str(r.id))
            if t.to_status == JobStatus.QUEUED and "Requeued: doomed" in (t.message or "")
        ]
        assert len(requeues) == held - 1, requeues
    # Generations: each job once, plus at most the one the dead worker's WebUI finished.
    extra = sum(n - 1 for n in sim.generations().values())
    assert extra <= 1, sim.generations()


def test_sigkill_one_of_two_workers_the_other_finishes_everything(api: FaultLab) -> None:
    sims = [api.start_sim(seconds_per_image=0.5) for _ in range(2)]
    pack = "kill-one-of-two"
    submit(pack, 12)
    doomed = api.start_worker("a-doomed", sims[0].url, lookahead=3)
    api.start_worker("b-survivor", sims[1].url, lookahead=3)
    wait(lambda: claimed_by(pack, "a-doomed") >= 2, 60, "the doomed worker to hold runs")
    kill(doomed, signal.SIGKILL)
    api.wait_settled(pack, 12, 90, "the survivor to finish the pack")
    assert set(completions_per_job(pack).values()) == {1}
    assert claimed_by(pack, "a-doomed") == 0


def test_restarted_worker_finds_nothing_half_held(api: FaultLab) -> None:
    """Same name, back before it counts as dead: it gives back what its last life held."""
    sim = api.start_sim(seconds_per_image=1.0)
    pack = "restart-same-name"
    submit(pack, 6)
    first = api.start_worker("gpu-0", sim.url, lookahead=3)
    wait(lambda: sim.busy() and claimed_by(pack, "gpu-0") >= 3, 60, "runs claimed")
    kill(first, signal.SIGKILL)
    api.start_worker("gpu-0", sim.url, lookahead=3)
    api.wait_settled(pack, 6, 90, "every job to complete after the restart")
    assert set(completions_per_job(pack).values()) == {1}
    assert "was restarted" in "".join(
        r.state.message or "" for r in runs_of(pack) if r.state and r.state.is_crashed()
    )


@pytest.mark.parametrize("sig", [signal.SIGTERM, signal.SIGINT], ids=["SIGTERM", "Ctrl-C"])
def test_graceful_stop_hands_back_and_strands_nothing(api: FaultLab, sig: int) -> None:
    sim = api.start_sim(seconds_per_image=1.0)
    pack = f"stop-{signal.Signals(sig).name.lower()}"
    submit(pack, 8)
    worker = api.start_worker("stopping", sim.url, lookahead=4)
    wait(lambda: sim.busy() and claimed_by(pack, "stopping") >= 5, 60, "a full lookahead")
    asked = time.monotonic()
    kill(worker, sig)
    worker.wait(timeout=30)  # grace is 20 s; the generating job needs ~1 s
    took = time.monotonic() - asked
    assert took < 10, f"the worker took {took:.1f}s to stop"
    assert claimed_by(pack, "stopping") == 0, states(pack)
    counts = states(pack)
    assert counts.get("FAILED", 0) == counts.get("CRASHED", 0) == 0, counts
    assert counts["SCHEDULED"] >= 4, counts  # the lookahead went back to the queue
    assert "worker stopped" in api.log("worker-stopping")

    api.start_worker("after", sim.url)
    api.wait_settled(pack, 8, 90, "the pack to finish on another worker")
    assert set(completions_per_job(pack).values()) == {1}
    assert max(sim.generations().values()) == 1, "a job was generated twice"


def test_stop_after_grace_interrupts_and_requeues_the_generating_job(api: FaultLab) -> None:
    sim = api.start_sim(seconds_per_image=30.0)
    pack = "stop-interrupt"
    submit(pack, 3)
    worker = api.start_worker(
        "slow", sim.url, lookahead=2, env={"STABLENEW_WORKER__STOP_GRACE": "1"}
    )
    wait(lambda: sim.busy(), 60, "a generation to start")
    asked = time.monotonic()
    kill(worker, signal.SIGTERM)
    worker.wait(timeout=30)
    assert time.monotonic() - asked < 15
    assert sim.call("GET", "stats")["counters"]["interrupts"] >= 1
    counts = states(pack)
    assert counts == {"SCHEDULED": 3}, counts  # interrupted, handed back: not failed


@pytest.mark.timeout(480)
def test_prefect_server_killed_and_restarted_with_a_queue(api: FaultLab) -> None:
    """Down for longer than a flow waits for its GPU grant to be confirmed (30 s): in CI a
    slow restart left runs PENDING for ever (a late answer took back their next claim).
    Once the API is back, the GPU resumes within seconds.

    Meanwhile a second worker is stopped (SIGTERM): Prefect drains its event and log queues
    at exit with no time limit, and a worker stopped while the server was down was once seen
    waiting for ever. It exits within its bounds, and its claims are put right once the
    server is back, by the worker that rode the outage out."""
    sim = api.start_sim(seconds_per_image=0.1)
    sim_leaving = api.start_sim(seconds_per_image=0.2)
    pack = "server-restart"
    submit(pack, 50)
    api.start_worker("steady", sim.url)
    leaving = api.start_worker(
        "leaving", sim_leaving.url, env={"STABLENEW_WORKER__STOP_GRACE": "3"}
    )
    wait(
        lambda: len(sim.generations()) >= 5 and len(sim_leaving.generations()) >= 1,
        60,
        "the first jobs to render on both workers",
    )
    api.kill_server()
    down = time.monotonic()
    kill(leaving, signal.SIGTERM)
    outage = cancellation.CONFIRM_SECONDS + 15
    leaving.wait(timeout=outage)
    # Grace 3 s, then up to 15 s for the hand-backs (they cannot reach the API), 5 s to
    # withdraw, 5 s to flush: bounded, however long the API stays away.
    took = time.monotonic() - down
    assert took < 40, f"the stopped worker took {took:.1f}s to exit"
    assert "worker stopped" in api.log("worker-leaving")
    time.sleep(max(0.0, outage - (time.monotonic() - down)))

    api.restart_server()
    back = time.monotonic()
    rendered = sum(sim.generations().values())
    wait(lambda: sum(sim.generations().values()) > rendered, 60, "the GPU to resume")
    # Prefect's client would sleep a minute and more between tries (20-25 s of idle GPU
    # after the restart were measured); the worker's calls are asked afresh every 10 s.
    resumed = time.monotonic() - back
    assert resumed < 12, f"the GPU resumed {resumed:.1f}s after the API was back"
    api.wait_settled(pack, 50, 180, "all 50 jobs to complete after the restart")
    assert set(completions_per_job(pack).values()) == {1}
    # A job the stopped worker generated but could not end runs again here, once.
    assert max(sim.generations().values()) == 1
    assert max(sim_leaving.generations().values()) == 1


def test_worker_stops_cleanly_with_nothing_to_do(api: FaultLab, tmp_path: Path) -> None:
    sim = api.start_sim(seconds_per_image=0.1)
    worker = api.start_worker("idle", sim.url)
    wait(lambda: "started" in api.log("worker-idle"), 60, "the worker to start")
    kill(worker, signal.SIGTERM)
    assert worker.wait(timeout=15) == 0


def test_two_recovering_parties_rerun_a_job_once(api: FaultLab) -> None:
    """Both see the same dead worker at once: one CRASHED run, one re-run, one requeue."""
    from prefect.states import Pending, Running

    from stablenew.orchestration.worker.recovery import claim_message, recover_worker

    pack = "two-parties"
    generating, staged = JobService().submit(
        [make_record(f"{pack} {i}", pack_id=pack) for i in range(2)], "normal"
    )
    by_job = {r.parameters["record"]["job_id"]: r for r in runs_of(pack)}
    logger = logging.getLogger("test")

    async def scenario() -> None:
        async with prefect_client() as client:
            # What a worker named "ghost" leaves when it dies: one run generating (started
            # at its GPU: RUNNING), one claimed behind it (PENDING).
            for job in (generating, staged):
                run = by_job[job]
                await client.set_flow_run_state(
                    run.id, Pending(message=claim_message("ghost")), force=True
                )
            run = by_job[generating]
            await client.update_flow_run_labels(run.id, {"prefect.worker.name": "ghost"})
            await client.set_flow_run_state(run.id, Running(), force=True)
            runs = await pack_runs(pack)
            assert len(runs) == 2
            await asyncio.gather(
                *(
                    recover_worker(
                        client, "ghost", runs, why="died", retries_on_crash=1, logger=logger
                    )
                    for _ in range(2)
                )
            )

    asyncio.run(scenario())
    runs = runs_of(pack)
    kinds = Counter(r.state.type.value for r in runs if r.state)
    assert kinds == {"CRASHED": 1, "SCHEDULED": 2}, kinds
    reruns = [r for r in runs if Lineage.of(r).reason == "recovery"]
    assert len(reruns) == 1
    assert reruns[0].parameters["record"]["job_id"] == generating
    requeued = by_job[staged]
    assert next(r for r in runs if r.id == requeued.id).state.message.startswith("Requeued")
    JobService().cancel_pack(pack)


def test_after_an_outage_a_worker_puts_right_the_runs_it_lost_track_of(
    api: FaultLab, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A live worker whose run's end could not be written (the API was down) finds the run
    once the API answers; the pool's recovery would never touch it (its worker is alive)."""
    from prefect.states import Pending, Running

    from stablenew.orchestration.worker import gpu_worker as worker_module
    from stablenew.orchestration.worker.gpu_worker import StableNewWorker
    from stablenew.orchestration.worker.recovery import claim_message
    from stablenew.orchestration.worker.recovery_duty import RecoveryPolicy

    monkeypatch.setattr(worker_module, "ORPHAN_MIN_AGE_SECONDS", 0.0)
    pack = "lost-touch"
    lost, held = JobService().submit(
        [make_record(f"{pack} {i}", pack_id=pack) for i in range(2)], "normal"
    )
    by_job = {r.parameters["record"]["job_id"]: r for r in runs_of(pack)}

    async def scenario() -> None:
        worker = StableNewWorker(
            work_pool_name="stablenew-gpu", name="outlived", recovery_policy=RecoveryPolicy()
        )
        async with worker, prefect_client() as client:
            # Both claimed by "outlived": one staged (PENDING), one started (RUNNING).
            for job in (lost, held):
                run = by_job[job]
                await client.set_flow_run_state(
                    run.id, Pending(message=claim_message("outlived")), force=True
                )
                await client.update_flow_run_labels(run.id, {"prefect.worker.name": "outlived"})
            await client.set_flow_run_state(by_job[held].id, Running(), force=True)
            worker._submitting_flow_run_ids.add(by_job[held].id)  # being started here
            assert worker.duty is not None
            assert await worker.duty.recover_own(
                "lost track of it while the Prefect API was unreachable",
                min_age=worker_module.ORPHAN_MIN_AGE_SECONDS,
            )

    asyncio.run(scenario())
    runs = {r.id: r for r in runs_of(pack)}
    assert runs[by_job[held].id].state.type == StateType.RUNNING
    put_back = runs[by_job[lost].id].state
    assert put_back.type == StateType.SCHEDULED, put_back
    assert "lost track of it while the Prefect API was unreachable" in put_back.message
    JobService().cancel_pack(pack)


def test_a_live_worker_judged_dead_lets_go_of_what_the_pool_took_back(api: FaultLab) -> None:
    """Its heartbeats stopped landing (a locked SQLite once did that) while it worked on: the
    pool crashed its generating run and requeued the two staged at its GPU gate. It must not
    write over the CRASHED run nor run the requeued ones as well as whoever claims them; it
    once got the GPU for one of them after another worker had completed it and wrote FAILED."""
    from stablenew.orchestration.worker.recovery import active_runs, claimant, recover_worker
    from stablenew.settings import get_settings

    slow = api.start_sim(seconds_per_image=10.0)
    fast = api.start_sim(seconds_per_image=0.2)
    pack = "judged-dead"
    submit(pack, 3)
    api.start_worker("alive", slow.url, lookahead=2)

    def one_generating_two_staged() -> bool:
        runs = [r for r in runs_of(pack) if claimant(r) == "alive"]
        kinds = sorted(r.state_type.value for r in runs if r.state_type)
        return slow.busy() and kinds == ["PENDING", "PENDING", "RUNNING"]

    wait(one_generating_two_staged, 60, "one run generating on 'alive' and two staged at its gate")
    api.start_worker("other", fast.url)
    wait(lambda: "started" in api.log("worker-other"), 60, "the other worker to start")
    assert len(slow.generations()) == 0, "the first generation ended before the test's turn"

    async def judged_dead() -> None:
        async with prefect_client() as client:
            runs = await active_runs(client, get_settings().work_pool)
            await recover_worker(
                client,
                "alive",
                runs,
                why="stopped heartbeating (test)",
                retries_on_crash=1,
                logger=logging.getLogger("test"),
            )

    asyncio.run(judged_dead())
    wait(
        lambda: slow.call("GET", "stats")["counters"]["interrupts"] >= 1,
        30,
        "'alive' to interrupt the generation of the run that was crashed under it",
    )
    slow.call("POST", "timing", seconds_per_step=0.05)  # what 'alive' claims next goes fast
    api.wait_settled(pack, 3, 90, "every job to complete once")
    # Prefect looks settled at once; what 'alive' does next is the point: its WebUI must go
    # quiet (the generation cut short) and stay so, not render the runs taken from it.
    idle_since: list[float] = []

    def quiet() -> bool:
        if slow.busy():
            idle_since.clear()
            return False
        idle_since[:] = idle_since or [time.monotonic()]
        return time.monotonic() - idle_since[0] >= 3.0

    wait(quiet, 90, "'alive' to let go of the runs taken from it")

    runs = runs_of(pack)
    assert set(completions_per_job(pack).values()) == {1}
    crashed = [r for r in runs if r.state and r.state.type == StateType.CRASHED]
    assert len(crashed) == 1, "the crashed run was written over"

    async def final_states() -> dict[str, list[str]]:
        async with prefect_client() as client:
            return {
                str(r.id): [
                    s.type.value for s in await client.read_flow_run_states(r.id) if s.is_final()
                ]
                for r in runs
            }

    ends = asyncio.run(final_states())
    assert all(len(e) == 1 for e in ends.values()), f"a run ended twice: {ends}"
    # Each job generated once where it completed; the crashed one also on 'alive', cut short.
    crashed_prompt = crashed[0].parameters["record"]["prompt"]
    generations = slow.generations() + fast.generations()
    assert generations[crashed_prompt] == 2, generations
    # A requeued run started elsewhere between two looks of the cancel watch may have begun
    # on 'alive' too, before the grant's check answered: cut short, that one.
    whole = generations - slow.cut_short() - fast.cut_short()
    others = {p for p in generations if p != crashed_prompt}
    assert {p: whole[p] for p in others} == dict.fromkeys(others, 1), generations
    assert "Taken back from alive" in api.log("worker-alive")


def test_a_run_started_elsewhere_between_two_looks_is_not_generated_here(api: FaultLab) -> None:
    """The pool took back a run staged at this worker's GPU gate and another worker started
    it at once: the cancel watch, which reads only runs that are neither PENDING nor RUNNING,
    never saw it leave. The GPU grant's start finds it: the run is let go of, and a
    generation of it here is cut short."""
    from prefect.states import Cancelled, Running

    from stablenew.orchestration.worker.recovery import WORKER_LABEL, claimant

    sim = api.start_sim(seconds_per_image=3.0)
    pack = "started-elsewhere"
    submit(pack, 2)
    api.start_worker("here", sim.url, lookahead=1)

    def staged_run() -> Any:
        runs = runs_of(pack)
        if not sim.busy() or [claimant(r) for r in runs] != ["here", "here"]:
            return None
        # One started at the GPU (RUNNING), one staged behind it (PENDING).
        kinds = sorted(r.state_type.value for r in runs if r.state_type)
        if kinds != ["PENDING", "RUNNING"]:
            return None
        return next(r for r in runs if r.state_type == StateType.PENDING)

    staged = wait(staged_run, 60, "one run generating on 'here' and one staged at its gate")

    async def start_elsewhere() -> None:
        # PENDING to RUNNING in one forced write: no state the watch reads in between.
        async with prefect_client() as client:
            await client.update_flow_run_labels(staged.id, {WORKER_LABEL: "elsewhere"})
            await client.set_flow_run_state(
                staged.id, Running(message="started elsewhere (test)"), force=True
            )

    asyncio.run(start_elsewhere())
    assert len(sim.generations()) == 0, "the first generation ended before the test's turn"
    wait(lambda: "Taken back from here" in api.log("worker-here"), 30, "'here' to let it go")
    wait(lambda: states(pack).get("COMPLETED") == 1, 30, "the generating run to complete")
    # The WebUI may have begun it before the answer came (the check does not hold the GPU
    # back); then it was interrupted at once, nothing of it kept.
    staged_prompt = staged.parameters["record"]["prompt"]
    assert sim.generations()[staged_prompt] == sim.cut_short()[staged_prompt], sim.generations()
    assert [claimant(r) for r in runs_of(pack) if r.id == staged.id] == ["elsewhere"]

    async def end_it() -> None:
        async with prefect_client() as client:
            await client.set_flow_run_state(staged.id, Cancelled(message="test over"), force=True)

    asyncio.run(end_it())


def test_a_worker_still_handing_out_its_gpu_is_not_recovered(api: FaultLab) -> None:
    """Its heartbeats do not land but it keeps giving its GPU to runs: alive, left alone.
    Once the hand-overs stop too, it is recovered."""
    from prefect.states import Pending, Running

    from stablenew.orchestration.worker.recovery import claim_message, claimant, scan
    from stablenew.settings import get_settings

    pack = "silent-but-busy"
    generating, staged = JobService().submit(
        [make_record(f"{pack} {i}", pack_id=pack) for i in range(2)], "normal"
    )
    by_job = {r.parameters["record"]["job_id"]: r for r in runs_of(pack)}
    pool = get_settings().work_pool
    logger = logging.getLogger("test")
    scanner = "0-scanner"  # first by name: the pool's recovering worker

    async def scan_now() -> None:
        async with prefect_client() as client:
            await client.send_worker_heartbeat(pool, scanner, heartbeat_interval_seconds=1)
            await scan(client, pool, scanner, dead_after=4, retries_on_crash=1, logger=logger)

    async def claim_and_start() -> None:
        async with prefect_client() as client:
            for job in (generating, staged):
                await client.set_flow_run_state(
                    by_job[job].id, Pending(message=claim_message("busy")), force=True
                )
            run = by_job[generating]
            await client.update_flow_run_labels(run.id, {"prefect.worker.name": "busy"})
            await client.set_flow_run_state(run.id, Running(), force=True)  # a GPU hand-over

    asyncio.run(claim_and_start())
    asyncio.run(scan_now())
    assert [claimant(r) for r in runs_of(pack)] == ["busy", "busy"], states(pack)

    time.sleep(5)  # dead_after (4 s) without a hand-over either
    asyncio.run(scan_now())
    assert states(pack) == {"CRASHED": 1, "SCHEDULED": 2}, states(pack)  # + the re-run
    JobService().cancel_pack(pack)


def test_deployments_hold_no_path_of_the_deploying_machine(api: FaultLab, tmp_path: Path) -> None:
    """A worker runs the flows from its own copy of the project, wherever it was started."""

    async def render_deployment() -> Any:
        async with prefect_client() as client:
            return await client.read_deployment_by_name("render-job/render-job")

    deployment = asyncio.run(render_deployment())
    assert deployment.path is None
    assert not deployment.pull_steps
    assert deployment.entrypoint == "flows/render.py:render_job"

    sim = api.start_sim(seconds_per_image=0.05)
    pack = "elsewhere"
    submit(pack, 2)
    elsewhere = tmp_path / "some-other-dir"
    elsewhere.mkdir()
    api.start_worker("elsewhere", sim.url, cwd=elsewhere)
    api.wait_settled(pack, 2, 60, "the jobs to complete")


def test_a_worker_that_cannot_load_the_flow_holds_instead_of_draining(api: FaultLab) -> None:
    """Its claims go back to the queue and it stops claiming; nothing is marked crashed."""
    from prefect.client.schemas.actions import DeploymentUpdate

    sim = api.start_sim(seconds_per_image=0.05)
    pack = "cannot-load"
    submit(pack, 5)

    async def break_entrypoint(entrypoint: str) -> None:
        async with prefect_client() as client:
            deployment = await client.read_deployment_by_name("render-job/render-job")
            await client.update_deployment(deployment.id, DeploymentUpdate(entrypoint=entrypoint))

    asyncio.run(break_entrypoint("flows/missing.py:render_job"))
    try:
        api.start_worker("broken", sim.url)
        wait(lambda: "cannot load the flow code" in api.log("worker-broken"), 60, "a hold")
        time.sleep(3)
        counts = states(pack)
        assert counts == {"SCHEDULED": 5}, counts  # handed back, nothing crashed or drained
        assert sim.generations() == Counter()
    finally:
        asyncio.run(break_entrypoint("flows/render.py:render_job"))
    JobService().cancel_pack(pack)
