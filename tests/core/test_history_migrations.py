"""History schema migrations: from an empty file, step by step, and from hand-made v1 and v3
files (v3 -> v4: every job with a flow run becomes that run, number 1)."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from pathlib import Path

import pytest

from stablenew.errors import HistoryError
from stablenew.history import open_store
from stablenew.history.migrations import LATEST_VERSION, migrate, schema_version
from stablenew.lifecycle import JobStatus
from tests.core.history_support import at, make_record

# The v1 schema as released, written out here so that later edits to migrations.py cannot
# silently change what "an old database" means.
V1_SCHEMA = """
CREATE TABLE jobs (
    id INTEGER PRIMARY KEY, job_id TEXT NOT NULL UNIQUE, flow_run_id TEXT,
    pack_id TEXT NOT NULL, pack_title TEXT, row_index INTEGER NOT NULL,
    combo_index INTEGER NOT NULL, variant_index INTEGER NOT NULL, batch_index INTEGER NOT NULL,
    prompt_head TEXT NOT NULL, model TEXT NOT NULL, sampler TEXT NOT NULL,
    steps INTEGER NOT NULL, width INTEGER NOT NULL, height INTEGER NOT NULL,
    seed INTEGER NOT NULL, record_json TEXT NOT NULL, status TEXT NOT NULL,
    status_at INTEGER NOT NULL, priority TEXT, worker TEXT, created_at INTEGER NOT NULL,
    queued_at INTEGER, started_at INTEGER, completed_at INTEGER, duration_s REAL,
    outputs TEXT NOT NULL DEFAULT '[]', error TEXT
);
CREATE TABLE transitions (
    id INTEGER PRIMARY KEY,
    job_id TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    from_status TEXT, to_status TEXT NOT NULL, at INTEGER NOT NULL, source TEXT NOT NULL,
    message TEXT, legal INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX ix_transitions_job ON transitions(job_id, at);
PRAGMA user_version = 1;
"""


@pytest.fixture
def conn(tmp_path: Path) -> Iterator[sqlite3.Connection]:
    c = sqlite3.connect(tmp_path / "h.db", isolation_level=None)
    yield c
    c.close()


def _names(conn: sqlite3.Connection, kind: str) -> set[str]:
    rows = conn.execute("SELECT name FROM sqlite_master WHERE type = ?", (kind,))
    return {r[0] for r in rows if not r[0].startswith("sqlite_")}


def test_empty_database_migrates_to_latest(conn: sqlite3.Connection) -> None:
    assert migrate(conn) == list(range(1, LATEST_VERSION + 1))
    assert schema_version(conn) == LATEST_VERSION
    assert migrate(conn) == []  # nothing left to do


def test_migration_1_creates_jobs_and_transitions(conn: sqlite3.Connection) -> None:
    assert migrate(conn, target=1) == [1]
    assert _names(conn, "table") == {"jobs", "transitions"}
    assert _names(conn, "index") == {"ix_transitions_job"}


def test_migration_2_adds_indexes_idempotency_key_and_triggers(
    conn: sqlite3.Connection,
) -> None:
    migrate(conn, target=1)
    assert migrate(conn, target=2) == [2]
    assert {
        "ix_jobs_status_created",
        "ix_jobs_pack_status_created",
        "ix_jobs_model_created",
        "ux_transitions_event",
    } <= _names(conn, "index")
    assert "ix_transitions_job" not in _names(conn, "index")
    assert _names(conn, "trigger") == {"transitions_no_update", "transitions_no_delete"}


def test_migration_3_adds_meta(conn: sqlite3.Connection) -> None:
    migrate(conn, target=2)
    assert migrate(conn, target=3) == [3]
    assert "meta" in _names(conn, "table")


def test_migration_4_adds_runs_and_run_keyed_transitions(conn: sqlite3.Connection) -> None:
    migrate(conn, target=3)
    assert migrate(conn, target=4) == [4]
    assert "runs" in _names(conn, "table")
    assert {"ix_runs_open", "ux_transitions_run_event"} <= _names(conn, "index")
    assert "ux_transitions_event" not in _names(conn, "index")
    assert _names(conn, "trigger") == {"transitions_no_update", "transitions_no_delete"}
    columns = {r[1] for r in conn.execute("PRAGMA table_info(transitions)")}
    assert {"flow_run_id", "attempt"} <= columns
    assert "runs" in {r[1] for r in conn.execute("PRAGMA table_info(jobs)")}


def _v3_database(path: Path) -> list[str]:
    """A v3 file as v3 code left it: the released v1 schema, migrations 2 and 3, and three
    jobs written with the v3 columns: finished with a flow run (its three runs merged into
    one row, as v3 did), queued with a flow run, and submitted before any flow run."""
    raw = sqlite3.connect(path, isolation_level=None)
    raw.executescript(V1_SCHEMA)
    assert migrate(raw, target=3) == [2, 3]
    recs = [make_record(row_index=i) for i in range(3)]
    rows = [
        (recs[0], "fr-0", "completed", 1_000_000, 6_000_000, 4.5, '["o/0.png"]'),
        (recs[1], "fr-1", "queued", 2_000_000, None, None, "[]"),
        (recs[2], None, "submitted", 3_000_000, None, None, "[]"),
    ]
    base = 1714564800000000
    for rec, flow_run_id, status, t, done, duration, outputs in rows:
        raw.execute(
            "INSERT INTO jobs (job_id, flow_run_id, pack_id, pack_title, row_index, combo_index,"
            " variant_index, batch_index, prompt_head, model, sampler, steps, width, height,"
            " seed, record_json, status, status_at, priority, worker, created_at, queued_at,"
            " started_at, completed_at, duration_s, outputs, error) VALUES (?, ?, 'demo',"
            " 'Demo pack', ?, 0, 0, 0, ?, ?, 'Euler a', 20, 512, 512, 1234, ?, ?, ?, 'high',"
            " ?, ?, ?, ?, ?, ?, ?, NULL)",
            (
                rec.job_id,
                flow_run_id,
                rec.row_index,
                rec.prompt,
                rec.model,
                rec.model_dump_json(),
                status,
                base + (done or t + 1),
                "gpu-0" if done else None,
                base + t,
                base + t + 1 if status != "submitted" else None,
                base + done - 4_500_000 if done else None,
                base + done if done else None,
                duration,
                outputs,
            ),
        )
        steps = [(None, "submitted", t, "submit")]
        if status != "submitted":
            steps.append(("submitted", "queued", t + 1, "exporter"))
        if done:
            steps += [("queued", "running", done - 4_500_000, "exporter")]
            steps += [("running", "completed", done, "exporter")]
        raw.executemany(
            "INSERT INTO transitions (job_id, from_status, to_status, at, source)"
            " VALUES (?, ?, ?, ?, ?)",
            [(rec.job_id, a, b, base + when, src) for a, b, when, src in steps],
        )
    raw.close()
    return [r.job_id for r in recs]


def test_v3_database_is_migrated_to_runs(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    path = tmp_path / "h.db"
    done, queued, bare = _v3_database(path)
    with open_store(path) as store:
        job = store.get_job(done)
        assert (job.status, job.runs, job.flow_run_id, job.duration_s) == (
            JobStatus.COMPLETED,
            1,
            "fr-0",
            4.5,
        )
        (run,) = store.runs_of(done)
        assert (run.run_number, run.flow_run_id, run.status, run.attempts) == (
            1,
            "fr-0",
            JobStatus.COMPLETED,
            1,
        )
        assert (run.created_at, run.started_at, run.completed_at) == (
            job.created_at,
            job.started_at,
            job.completed_at,
        )
        assert (run.duration_s, run.outputs, run.worker, run.priority) == (
            4.5,
            ("o/0.png",),
            "gpu-0",
            "high",
        )
        steps = store.transitions(done)
        assert [(t.to_status, t.flow_run_id, t.attempt) for t in steps] == [
            (JobStatus.SUBMITTED, None, None),  # the job's own, like a new job's
            (JobStatus.QUEUED, "fr-0", 1),
            (JobStatus.RUNNING, "fr-0", 1),
            (JobStatus.COMPLETED, "fr-0", 1),
        ]
        assert len(store.transitions(done, "fr-0")) == 3
        assert store.get_run("fr-1").status is JobStatus.QUEUED
        assert (store.get_job(bare).runs, store.runs_of(bare)) == (0, [])

        # After the migration: repeats still add nothing, a new run of the finished job is
        # legal and becomes the latest, and the queued run moves on.
        with caplog.at_level(logging.WARNING):
            assert not store.record_transition(done, JobStatus.QUEUED, at(1.000001))
            assert not store.record_transition(
                done, JobStatus.COMPLETED, steps[-1].at, flow_run_id="fr-0"
            )
            assert store.record_transition(done, JobStatus.QUEUED, at(60), flow_run_id="fr-9")
            assert store.record_transition(queued, JobStatus.RUNNING, at(61))
        assert caplog.records == []
        job = store.get_job(done)
        assert (job.status, job.runs, job.flow_run_id) == (JobStatus.QUEUED, 2, "fr-9")
        assert store.get_run("fr-1").status is JobStatus.RUNNING
    raw = sqlite3.connect(path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            raw.execute("UPDATE transitions SET attempt = 2")
    finally:
        raw.close()


def test_failed_step_rolls_back_whole(conn: sqlite3.Connection) -> None:
    migrate(conn, target=2)
    conn.execute("CREATE TABLE meta (x)")  # sabotage: migration 3 will collide
    with pytest.raises(sqlite3.OperationalError, match="already exists"):
        migrate(conn)
    assert schema_version(conn) == 2


def test_v1_database_is_migrated_with_data_intact(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    rec = make_record()
    raw = sqlite3.connect(path, isolation_level=None)
    raw.executescript(V1_SCHEMA)
    raw.execute(
        "INSERT INTO jobs (job_id, pack_id, pack_title, row_index, combo_index, variant_index,"
        " batch_index, prompt_head, model, sampler, steps, width, height, seed, record_json,"
        " status, status_at, created_at) VALUES (?, 'demo', 'Demo pack', 0, 0, 0, 0, ?, ?,"
        " 'Euler a', 20, 512, 512, 1234, ?, 'queued', 1714564801000000, 1714564800000000)",
        (rec.job_id, rec.prompt, rec.model, rec.model_dump_json()),
    )
    raw.execute(
        "INSERT INTO transitions (job_id, from_status, to_status, at, source)"
        " VALUES (?, NULL, 'submitted', 1714564800000000, 'submit'),"
        " (?, 'submitted', 'queued', 1714564801000000, 'exporter')",
        (rec.job_id, rec.job_id),
    )
    raw.close()

    with open_store(path) as store:
        row = store.get_job(rec.job_id)
        assert row.record() == rec
        assert row.status is JobStatus.QUEUED
        assert [t.to_status for t in store.transitions(rec.job_id)] == ["submitted", "queued"]
        # New in v2/v3: idempotent events and the watermark table work on the old data.
        assert store.record_transition(rec.job_id, JobStatus.QUEUED, at(1)) is False
        assert store.record_transition(rec.job_id, JobStatus.RUNNING, at(2)) is True
        store.set_watermark("w")
        assert store.get_watermark() == "w"
    check = sqlite3.connect(path)
    try:
        assert check.execute("PRAGMA user_version").fetchone()[0] == LATEST_VERSION
        assert check.execute("PRAGMA journal_mode").fetchone()[0] == "wal"
    finally:
        check.close()


def test_newer_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    raw = sqlite3.connect(path)
    raw.execute(f"PRAGMA user_version = {LATEST_VERSION + 1}")
    raw.close()
    with pytest.raises(HistoryError, match="newer than this StableNew"):
        open_store(path)


def test_read_only_open_of_an_old_schema_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    raw = sqlite3.connect(path, isolation_level=None)
    raw.executescript(V1_SCHEMA)
    raw.close()
    with pytest.raises(HistoryError, match="schema version 1"):
        open_store(path, read_only=True)
