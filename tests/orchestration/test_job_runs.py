"""A job and its runs, from a real Prefect server and worker into the history: each run keeps
its own status, times and outputs; Prefect's Retry is a new attempt of the same run; no
transition of one run is judged against another's; lineage reaches the history."""

from __future__ import annotations

import asyncio
import logging
from pathlib import Path

import pytest
from prefect.states import Scheduled

from stablenew.history import SqliteHistoryStore
from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services.exporter import sync
from stablenew.orchestration.services.jobs import JobService
from tests.orchestration.conftest import LiveStack, make_record, wait_for

pytestmark = pytest.mark.slow


def _sync(store: SqliteHistoryStore, output_root: Path) -> None:
    async def go() -> None:
        async with prefect_client() as client:
            await sync(client, store, output_root=output_root)

    asyncio.run(go())


def _finish(service: JobService, job_id: str) -> JobStatus:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (s := service.status(job_id).status).is_terminal and s,
        timeout=60,
        what=f"{job_id} to finish",
    )


def test_a_job_run_three_times_has_three_runs(
    live: LiveStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    service = JobService()
    rec = make_record("three times")
    with SqliteHistoryStore(tmp_path / "history.db") as store:
        service.submit([rec])
        assert _finish(service, rec.job_id) is JobStatus.COMPLETED
        _sync(store, live.output_root)  # a sync between runs, as the minutely export does
        service.submit([rec], allow_duplicates=True)
        assert _finish(service, rec.job_id) is JobStatus.COMPLETED
        service.pause()
        try:
            service.submit([rec], allow_duplicates=True)
            service.cancel(rec.job_id)
        finally:
            service.resume()
        assert _finish(service, rec.job_id) is JobStatus.CANCELLED
        with caplog.at_level(logging.WARNING):
            _sync(store, live.output_root)
            _sync(store, live.output_root)  # idempotent

        runs = store.runs_of(rec.job_id)
        assert [r.status for r in runs] == [
            JobStatus.COMPLETED,
            JobStatus.COMPLETED,
            JobStatus.CANCELLED,
        ]
        assert [r.run_number for r in runs] == [1, 2, 3]
        assert [r.reason for r in runs] == ["submit", "duplicate", "duplicate"]
        assert runs[1].parent_flow_run_id == runs[0].flow_run_id
        for done in runs[:2]:
            assert done.duration_s is not None
            assert done.duration_s < 30  # its own run, not the span since the first
            assert len(done.outputs) == rec.batch_size
        assert set(runs[0].outputs).isdisjoint(runs[1].outputs)  # never one file for two
        job = store.get_job(rec.job_id)
        assert job.status is JobStatus.CANCELLED
        assert job.runs == 3
        assert job.flow_run_id == runs[2].flow_run_id
        assert all(t.legal for t in store.transitions(rec.job_id))
    assert "illegal transition" not in caplog.text


def test_prefect_retry_of_a_failed_run_is_a_new_attempt(live: LiveStack, tmp_path: Path) -> None:
    service = JobService()
    rec = make_record("fail, then retry")
    live.sim("POST", "faults", reject_next=1)
    service.submit([rec])
    assert _finish(service, rec.job_id) is JobStatus.FAILED
    run_id = service.status(rec.job_id).flow_run_id
    with SqliteHistoryStore(tmp_path / "history.db") as store:
        _sync(store, live.output_root)
        assert store.get_run(run_id).status is JobStatus.FAILED

        async def retry_as_the_ui_does() -> None:
            async with prefect_client() as client:
                await client.set_flow_run_state(
                    run_id, Scheduled(name="AwaitingRetry", message="Retry from the UI"), force=True
                )

        asyncio.run(retry_as_the_ui_does())
        assert _finish(service, rec.job_id) is JobStatus.COMPLETED
        _sync(store, live.output_root)
        runs = store.runs_of(rec.job_id)
        assert len(runs) == 1
        assert runs[0].status is JobStatus.COMPLETED
        assert runs[0].attempts == 2
        assert runs[0].error is None or runs[0].status is JobStatus.COMPLETED
        assert all(t.legal for t in store.transitions(rec.job_id))
        statuses = [t.to_status for t in store.transitions(rec.job_id, flow_run_id=run_id)]
        assert statuses[-1] is JobStatus.COMPLETED
        assert JobStatus.FAILED in statuses


def test_reads_are_current_without_a_manual_sync(live: LiveStack, tmp_path: Path) -> None:
    from stablenew.orchestration.services.history_service import JobHistoryService

    service = JobService()
    rec = make_record("read me at once")
    with SqliteHistoryStore(tmp_path / "history.db") as store:
        history = JobHistoryService(store)
        service.pause()
        try:
            service.submit([rec])
            # Known to the history while queued (an unknown prefix syncs everything new)...
            assert history.get(rec.job_id[:-3]).status is JobStatus.QUEUED
        finally:
            service.resume()
        assert _finish(service, rec.job_id) is JobStatus.COMPLETED
        # ...and finished the moment it is read again: no `history sync` in between.
        explained = history.explain(rec.job_id)
        assert explained.job.status is JobStatus.COMPLETED
        assert explained.run is not None
        assert explained.run.status is JobStatus.COMPLETED
        assert [t.to_status for t in store.transitions(rec.job_id)][-1] is JobStatus.COMPLETED


def test_a_run_scheduled_for_later_does_not_hide_newer_ones(
    live: LiveStack, tmp_path: Path
) -> None:
    from datetime import UTC, datetime, timedelta

    from stablenew.orchestration.services.deployments import RENDER_DEPLOYMENT, RENDER_FLOW_NAME

    later = make_record("tomorrow, maybe")

    async def schedule_tomorrow() -> None:
        async with prefect_client() as client:
            deployment = await client.read_deployment_by_name(
                f"{RENDER_FLOW_NAME}/{RENDER_DEPLOYMENT}"
            )
            await client.create_flow_run_from_deployment(
                deployment.id,
                parameters={"record": later.model_dump(mode="json")},
                state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(days=1)),
                idempotency_key=later.job_id,
                work_queue_name="low",
            )

    asyncio.run(schedule_tomorrow())
    service = JobService()
    try:
        with SqliteHistoryStore(tmp_path / "history.db") as store:
            _sync(store, live.output_root)
            assert store.get_job(later.job_id).status is JobStatus.QUEUED
            now = make_record("today")
            service.submit([now])
            assert _finish(service, now.job_id) is JobStatus.COMPLETED
            _sync(store, live.output_root)
            assert store.get_job(now.job_id).status is JobStatus.COMPLETED
    finally:
        service.cancel(later.job_id)
