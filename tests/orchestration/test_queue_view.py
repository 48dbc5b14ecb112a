"""The queue view on the real stack: the job a GPU generates is told from the runs the worker
has staged behind it, holds of workers that are offline are left out, a worker that stops
withdraws what it published, and ``cancel`` takes a unique prefix of a job id."""

from __future__ import annotations

import asyncio
import logging
import uuid
from pathlib import Path

import pytest
from prefect.client.schemas.actions import VariableCreate
from typer.testing import CliRunner

from stablenew.cli.app import app
from stablenew.history import SqliteHistoryStore
from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services.history_service import JobHistoryService
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.queue_view import QueueState
from stablenew.orchestration.worker.gpu_worker import StableNewWorker
from stablenew.orchestration.worker.worker_state import (
    gpu_variable_name,
    hold_variable_name,
    online_workers,
    publish_hold,
    read_published,
)
from tests.orchestration.conftest import LiveStack, make_record, wait_for

pytestmark = pytest.mark.slow

POOL = "stablenew-gpu"
logger = logging.getLogger(__name__)
runner = CliRunner()


def _cli(live: LiveStack, *args: str) -> tuple[int, str]:
    result = runner.invoke(
        app, list(args), env={"COLUMNS": "80", "PREFECT_API_URL": live.prefect_url}
    )
    return result.exit_code, result.output


def _wait_terminal(service: JobService, job_ids: list[str]) -> None:
    wait_for(
        lambda: all(service.status(j).status.is_terminal for j in job_ids),
        timeout=60,
        what="the jobs to end",
    )


def test_one_generating_and_the_rest_staged(live: LiveStack, tmp_path: Path) -> None:
    service = JobService()
    live.sim("POST", "timing", seconds_per_step=0.5)  # 10 s a job: the view holds still
    recs = [make_record(f"staged view {i}", steps=20) for i in range(3)]
    ids = service.submit(recs)

    def settled() -> QueueState | None:
        state = service.queue_state()
        return state if len(state.generating) == 1 and len(state.staged) == 2 else None

    state = wait_for(settled, what="one job generating and two staged")
    assert state.status == "running"
    assert [r.job_id for r in state.generating] == ids[:1]  # FIFO: the first renders first
    assert [r.job_id for r in state.staged] == ids[1:]
    assert state.pending == []
    # What ``running`` used to be: every run Prefect reports RUNNING.
    assert {r.job_id for r in state.running} >= set(ids[:1])
    with SqliteHistoryStore(tmp_path / "history.db") as store:
        active = asyncio.run(JobHistoryService(store, jobs=service).list_active())
    assert [(v.job_id, v.queue_position) for v in active] == [
        (ids[0], None),
        (ids[1], 1),
        (ids[2], 2),
    ]

    code, out = _cli(live, "queue")
    assert code == 0, out
    assert "running - 1 generating, 2 staged, 0 pending" in out
    rows = {line.split()[-1]: line.split() for line in out.splitlines() if "itest-" in line}
    assert set(rows) == set(ids)  # full ids at 80 columns
    assert [rows[i][0] for i in ids] == ["generating", "1", "2"]
    assert [rows[i][1] for i in ids[1:]] == ["staged", "staged"]

    service.pause()  # the job on the GPU finishes; the staged ones wait
    paused = service.queue_state()
    assert (paused.status, len(paused.generating), len(paused.staged)) == ("paused", 1, 2)
    service.cancel_pack("itest")
    _wait_terminal(service, ids)


def test_holds_of_offline_workers_are_not_shown(live: LiveStack) -> None:
    names = ("ghost", "alive", "never")

    async def publish() -> None:
        async with prefect_client() as client:
            # "ghost" worked here and died (heartbeats every second, so offline after 3 s);
            # "alive" heartbeats at Prefect's default interval; "never" was never seen.
            await client.send_worker_heartbeat(POOL, "ghost", heartbeat_interval_seconds=1)
            await client.send_worker_heartbeat(POOL, "alive", heartbeat_interval_seconds=30)
            for name in names:
                await publish_hold(client, name, f"WebUI of {name} is not answering", logger)

    async def online() -> set[str]:
        async with prefect_client() as client:
            return await online_workers(client, POOL)

    async def withdraw() -> None:
        async with prefect_client() as client:
            for name in names:
                await publish_hold(client, name, None, logger)

    asyncio.run(publish())
    try:
        wait_for(lambda: "ghost" not in asyncio.run(online()), timeout=10, what="ghost offline")
        assert JobService().queue_state().holds == ["alive: WebUI of alive is not answering"]
    finally:
        asyncio.run(withdraw())
    assert JobService().queue_state().holds == []


def test_a_worker_that_stops_withdraws_its_hold(live: LiveStack) -> None:
    name = f"stopping-{uuid.uuid4().hex[:8]}"

    async def scenario() -> None:
        worker = StableNewWorker(
            work_pool_name=POOL, name=name, readiness_check=lambda: "WebUI is not answering"
        )
        async with worker:
            await worker.sync_with_backend()  # its heartbeat: online
            assert await worker.get_and_submit_flow_runs() == []  # holds, claims nothing
            # What a worker before the start at the GPU grant published, and never withdrew
            # if it stopped before an upgrade: gone once this one stops.
            await worker.client.create_variable(
                VariableCreate(name=gpu_variable_name(name), value={"worker": name})
            )
            async with prefect_client() as client:
                published = await read_published(client, POOL)
            assert f"{name}: WebUI is not answering" in published.holds
        async with prefect_client() as client:
            assert await client.read_variable_by_name(hold_variable_name(name)) is None
            assert await client.read_variable_by_name(gpu_variable_name(name)) is None

    asyncio.run(scenario())


def test_cancel_takes_a_prefix_the_history_knows_else_a_full_id(
    live: LiveStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    history = tmp_path / "history.db"
    monkeypatch.setenv("STABLENEW_HISTORY_URL", f"sqlite:///{history}")
    service = JobService()
    service.pause()
    known, unsynced, twin = (make_record(f"cancel by prefix {i}", row_index=i) for i in (1, 2, 3))
    service.submit([known, unsynced])
    with SqliteHistoryStore(history) as store:
        store.record_submission(known)
        store.record_submission(twin)  # shares "itest-" with known: a prefix can be ambiguous

    code, out = _cli(live, "cancel", "itest-")
    assert code == 2
    assert "matches more than one job" in out
    code, out = _cli(live, "cancel", known.job_id[:-6])
    assert code == 0, out
    assert f"{known.job_id}: cancelled" in out
    # Not in the history yet (submitted since its last sync): taken as the full id it is.
    code, out = _cli(live, "cancel", unsynced.job_id)
    assert code == 0, out
    assert service.status(unsynced.job_id).status == JobStatus.CANCELLED
    code, out = _cli(live, "cancel", "itest-9")
    assert code == 2
    assert "no job with id 'itest-9'" in out
