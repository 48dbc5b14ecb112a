"""History from a real Prefect server: sync maps completed, failed and cancelled-while-queued
jobs with their transitions and errors, is idempotent, stores records bit for bit, survives a
reopen, round-trips through export, and feeds ``explain`` and the CLI."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path

import pytest
from prefect.settings import PREFECT_LOGGING_TO_API_ENABLED, temporary_settings
from typer.testing import CliRunner

from stablenew.cli.app import app
from stablenew.history import SqliteHistoryStore
from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services.exporter import SyncStats, sync
from stablenew.orchestration.services.history_service import JobHistoryService
from stablenew.orchestration.services.jobs import JobService
from stablenew.records import NormalizedJobRecord
from tests.orchestration.conftest import LiveStack, make_record, wait_for

pytestmark = pytest.mark.slow


def _sync(store: SqliteHistoryStore) -> SyncStats:
    async def go() -> SyncStats:
        async with prefect_client() as client:
            return await sync(client, store)

    return asyncio.run(go())


def _finished_job_and_history_db(
    prompt: str, db: Path, monkeypatch: pytest.MonkeyPatch
) -> NormalizedJobRecord:
    """Run one job to the end, and point STABLENEW_HISTORY_URL at ``db``."""
    service = JobService()
    rec = make_record(prompt)
    service.submit([rec])
    wait_for(lambda: service.status(rec.job_id).status.is_terminal, what="job to finish")
    monkeypatch.setenv("STABLENEW_HISTORY_URL", f"sqlite:///{db}")
    return rec


def test_history_of_completed_failed_and_cancelled_jobs(live: LiveStack, tmp_path: Path) -> None:
    service = JobService()
    ok = make_record("history ok")
    bad = make_record("history bad", model="no-such-checkpoint")
    dropped = make_record("history dropped")
    service.pause()
    service.submit([ok, bad, dropped])
    service.cancel(dropped.job_id)
    service.resume()
    wait_for(
        lambda: all(service.status(r.job_id).status.is_terminal for r in (ok, bad)),
        what="jobs to finish",
    )

    db = tmp_path / "history.db"
    with SqliteHistoryStore(db) as store:
        first = _sync(store)
        assert first.jobs_added >= 3
        assert store.get_job(ok.job_id).status == JobStatus.COMPLETED
        assert store.get_job(bad.job_id).status == JobStatus.FAILED
        assert "no-such-checkpoint" in (store.get_job(bad.job_id).error or "")
        assert store.get_job(dropped.job_id).status == JobStatus.CANCELLED
        # The record stored is the record built, byte for byte.
        assert store.get_job(ok.job_id).record().model_dump_json() == ok.model_dump_json()
        steps = [t.to_status for t in store.transitions(ok.job_id)]
        assert steps == [
            JobStatus.SUBMITTED,
            JobStatus.QUEUED,
            JobStatus.RUNNING,
            JobStatus.COMPLETED,
        ]
        assert [t.to_status for t in store.transitions(dropped.job_id)] == [
            JobStatus.SUBMITTED,
            JobStatus.QUEUED,
            JobStatus.CANCELLED,
        ]
        again = _sync(store)
        assert (again.jobs_added, again.transitions_added) == (0, 0)

        info = JobHistoryService(store, service).explain(ok.job_id)
        assert info.provenance["resolved_prompt"] == "history ok"
        assert info.webui_requests[0]["path"].endswith("/txt2img")
        assert info.webui_requests[0]["body"]["prompt"] == "history ok"
        assert info.timeline[-1].status == JobStatus.COMPLETED

        out = tmp_path / "export.jsonl"
        n = store.export("jsonl", out)
        rows = [json.loads(line) for line in out.read_text().splitlines()]
        assert n == len(rows) == store.count()
        assert {r["job_id"] for r in rows} >= {ok.job_id, bad.job_id, dropped.job_id}

    # Reopened (as after a restart): intact, and a new sync adds nothing.
    with SqliteHistoryStore(db) as store:
        assert store.get_job(bad.job_id).status == JobStatus.FAILED
        assert _sync(store).transitions_added == 0


def test_history_cli_reads_the_store(
    live: LiveStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    rec = _finished_job_and_history_db("history via cli", tmp_path / "h.db", monkeypatch)
    monkeypatch.setenv("PREFECT_API_URL", live.prefect_url)
    runner = CliRunner()
    synced = runner.invoke(app, ["history", "sync", "--json"])
    assert synced.exit_code == 0, synced.output
    listed = runner.invoke(app, ["history", "ls", "--text", "via cli", "--json"])
    assert listed.exit_code == 0, listed.output
    jobs = json.loads(listed.output)["jobs"]
    assert [j["job_id"] for j in jobs] == [rec.job_id]
    assert jobs[0]["status"] == "completed"
    explained = runner.invoke(app, ["explain", rec.job_id, "--json"])
    assert explained.exit_code == 0, explained.output
    assert json.loads(explained.output)["record"]["job_id"] == rec.job_id
    missing = runner.invoke(app, ["history", "show", "nope"])
    assert missing.exit_code == 2


def test_export_history_flow_syncs_and_publishes(
    live: LiveStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from flows.export import export_history
    from stablenew.settings import get_settings

    rec = _finished_job_and_history_db("exported by the flow", tmp_path / "flow.db", monkeypatch)
    get_settings.cache_clear()
    # The flow runs in this process: without this its log records would still be on their
    # way to the API when the session's server stops ("Error logging to API" at exit).
    with temporary_settings(updates={PREFECT_LOGGING_TO_API_ENABLED: False}):
        result = asyncio.run(export_history(recent=5))
    assert result["jobs_added"] >= 1
    with SqliteHistoryStore(tmp_path / "flow.db") as store:
        assert store.get_job(rec.job_id).status == JobStatus.COMPLETED

    async def artifact_rows() -> list[dict[str, str]]:
        async with prefect_client() as client:
            artifact = await client.read_latest_artifacts()
            table = next(a for a in artifact if a.key == "stablenew-recent-jobs")
            data = table.data if isinstance(table.data, list) else json.loads(str(table.data))
            return list(data)

    assert rec.job_id in {row["job_id"] for row in asyncio.run(artifact_rows())}


def test_history_write_failure_is_logged_not_raised(
    live: LiveStack, tmp_path: Path, caplog: pytest.LogCaptureFixture
) -> None:
    from stablenew.orchestration.services.exporter import safe_sync

    db = tmp_path / "ro.db"
    SqliteHistoryStore(db).close()  # create and migrate it
    with SqliteHistoryStore(db, read_only=True) as store:

        async def go() -> SyncStats | None:
            async with prefect_client() as client:
                return await safe_sync(client, store)

        assert asyncio.run(go()) is None
    assert "history sync failed" in caplog.text


def test_the_scheduler_creates_export_history_runs(live: LiveStack) -> None:
    """Guards the SQLAlchemy pin: with 2.1 Prefect's scheduler failed every tick."""
    from prefect.client.schemas.filters import DeploymentFilter, DeploymentFilterName

    async def scheduled() -> int:
        async with prefect_client() as client:
            runs = await client.read_flow_runs(
                deployment_filter=DeploymentFilter(
                    name=DeploymentFilterName(any_=["export-history"])
                ),
                limit=5,
            )
            return len(runs)

    assert wait_for(lambda: asyncio.run(scheduled()), timeout=90, what="scheduled export runs")
