"""Numbered schema migrations of the history database, tracked in ``PRAGMA user_version``.

Each migration runs in its own ``BEGIN IMMEDIATE`` transaction together with the version bump,
so a crash mid-migration leaves the previous version intact and the next open retries it; two
processes opening a fresh file at once serialise on the write lock and the second finds nothing
left to do. Never edit a released migration: append a new one.

1. ``jobs`` (one row per job) and ``transitions`` (its status history).
2. Query indexes, the idempotency key of transitions, append-only triggers.
3. ``meta``: key/value pairs such as the exporter's sync watermark.
4. ``runs``: each Prefect flow run of a job (its own status, times, outputs, attempts and
   lineage); ``jobs.runs`` counts them; transitions belong to a run (``flow_run_id``,
   ``attempt``) and are unique per run. Existing jobs with a flow run become that run, number 1.
5. ``ratings``: a person's judgement of a job (at most one row per job): stars 1..5 (or none
   yet), a note, whether it is a favourite, the run whose images were judged, and when.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Sequence

from stablenew.errors import HistoryError

_V1 = """
CREATE TABLE jobs (
    id            INTEGER PRIMARY KEY,
    job_id        TEXT NOT NULL UNIQUE,
    flow_run_id   TEXT,
    pack_id       TEXT NOT NULL,
    pack_title    TEXT,
    row_index     INTEGER NOT NULL,
    combo_index   INTEGER NOT NULL,
    variant_index INTEGER NOT NULL,
    batch_index   INTEGER NOT NULL,
    prompt_head   TEXT NOT NULL,
    model         TEXT NOT NULL,
    sampler       TEXT NOT NULL,
    steps         INTEGER NOT NULL,
    width         INTEGER NOT NULL,
    height        INTEGER NOT NULL,
    seed          INTEGER NOT NULL,
    record_json   TEXT NOT NULL,
    status        TEXT NOT NULL,
    status_at     INTEGER NOT NULL,
    priority      TEXT,
    worker        TEXT,
    created_at    INTEGER NOT NULL,
    queued_at     INTEGER,
    started_at    INTEGER,
    completed_at  INTEGER,
    duration_s    REAL,
    outputs       TEXT NOT NULL DEFAULT '[]',
    error         TEXT
);
CREATE TABLE transitions (
    id          INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    from_status TEXT,
    to_status   TEXT NOT NULL,
    at          INTEGER NOT NULL,
    source      TEXT NOT NULL,
    message     TEXT,
    legal       INTEGER NOT NULL DEFAULT 1
);
CREATE INDEX ix_transitions_job ON transitions(job_id, at);
"""

# Times are integer microseconds; every index ends in created_at so that a filtered page in
# created order is an index range walk (the rowid tie-break is implicit in every index).
_V2 = """
CREATE INDEX ix_jobs_created ON jobs(created_at);
CREATE INDEX ix_jobs_status_created ON jobs(status, created_at);
CREATE INDEX ix_jobs_pack_created ON jobs(pack_id, created_at);
CREATE INDEX ix_jobs_pack_status_created ON jobs(pack_id, status, created_at);
CREATE INDEX ix_jobs_model_created ON jobs(model, created_at);
CREATE INDEX ix_jobs_flow_run ON jobs(flow_run_id);
DROP INDEX ix_transitions_job;
CREATE UNIQUE INDEX ux_transitions_event ON transitions(job_id, to_status, at);
CREATE TRIGGER transitions_no_update BEFORE UPDATE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;
-- Deleting is allowed only once the job itself is gone: prune's cascade, nothing else.
CREATE TRIGGER transitions_no_delete BEFORE DELETE ON transitions
WHEN EXISTS (SELECT 1 FROM jobs WHERE jobs.job_id = OLD.job_id)
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;
"""

_V3 = """
CREATE TABLE meta (
    key   TEXT PRIMARY KEY,
    value TEXT NOT NULL
) WITHOUT ROWID;
"""

# Two jobs can never share a flow run; OR IGNORE only keeps a damaged file migratable.
# A job's status columns mirror its latest run (highest run_number); run numbers follow
# creation order. The job's own "submitted" transition keeps flow_run_id NULL, as do the
# transitions of jobs recorded before any run was known. The unique key of a transition is
# per run: COALESCE makes NULL a value, so INSERT OR IGNORE still deduplicates job-level rows.
_V4 = """
ALTER TABLE jobs ADD COLUMN runs INTEGER NOT NULL DEFAULT 0;
CREATE TABLE runs (
    id                 INTEGER PRIMARY KEY,
    flow_run_id        TEXT NOT NULL UNIQUE,
    job_id             TEXT NOT NULL REFERENCES jobs(job_id) ON DELETE CASCADE,
    run_number         INTEGER NOT NULL,
    status             TEXT NOT NULL,
    status_at          INTEGER NOT NULL,
    priority           TEXT,
    worker             TEXT,
    created_at         INTEGER NOT NULL,
    queued_at          INTEGER,
    started_at         INTEGER,
    completed_at       INTEGER,
    duration_s         REAL,
    outputs            TEXT NOT NULL DEFAULT '[]',
    error              TEXT,
    attempts           INTEGER NOT NULL DEFAULT 1,
    parent_flow_run_id TEXT,
    parent_job_id      TEXT,
    reason             TEXT,
    UNIQUE (job_id, run_number)
);
CREATE INDEX ix_runs_open ON runs(status, flow_run_id)
    WHERE status IN ('submitted', 'queued', 'running', 'cancelling');
ALTER TABLE transitions ADD COLUMN flow_run_id TEXT;
ALTER TABLE transitions ADD COLUMN attempt INTEGER;
INSERT OR IGNORE INTO runs (
    flow_run_id, job_id, run_number, status, status_at, priority, worker, created_at,
    queued_at, started_at, completed_at, duration_s, outputs, error, attempts
)
SELECT flow_run_id, job_id, 1, status, status_at, priority, worker, created_at,
    queued_at, started_at, completed_at, duration_s, outputs, error, 1
FROM jobs WHERE flow_run_id IS NOT NULL ORDER BY id;
UPDATE jobs SET runs = 1 WHERE job_id IN (SELECT job_id FROM runs);
DROP TRIGGER transitions_no_update;
UPDATE transitions SET
    flow_run_id = (SELECT r.flow_run_id FROM runs r WHERE r.job_id = transitions.job_id),
    attempt = 1
WHERE NOT (from_status IS NULL AND to_status = 'submitted')
    AND job_id IN (SELECT job_id FROM runs);
CREATE TRIGGER transitions_no_update BEFORE UPDATE ON transitions
BEGIN
    SELECT RAISE(ABORT, 'transitions are append-only');
END;
DROP INDEX ux_transitions_event;
CREATE UNIQUE INDEX ux_transitions_run_event
    ON transitions(job_id, COALESCE(flow_run_id, ''), to_status, at);
"""

# A favourite need not be rated (stars NULL); deleting a job (prune) deletes its rating.
_V5 = """
CREATE TABLE ratings (
    job_id      TEXT PRIMARY KEY REFERENCES jobs(job_id) ON DELETE CASCADE,
    flow_run_id TEXT,
    stars       INTEGER CHECK (stars IS NULL OR stars BETWEEN 1 AND 5),
    note        TEXT,
    favourite   INTEGER NOT NULL DEFAULT 0 CHECK (favourite IN (0, 1)),
    at          INTEGER NOT NULL
) WITHOUT ROWID;
CREATE INDEX ix_ratings_favourite ON ratings(favourite, job_id);
"""

MIGRATIONS: Sequence[str] = (_V1, _V2, _V3, _V4, _V5)
"""``MIGRATIONS[n - 1]`` brings a database from version ``n - 1`` to ``n``."""

LATEST_VERSION = len(MIGRATIONS)


def schema_version(conn: sqlite3.Connection) -> int:
    row = conn.execute("PRAGMA user_version").fetchone()
    return int(row[0])


def migrate(conn: sqlite3.Connection, target: int = LATEST_VERSION) -> list[int]:
    """Apply the missing migrations up to ``target``; returns the versions applied.

    ``conn`` must be in autocommit mode (``isolation_level=None``). A database newer than
    this code raises :class:`HistoryError`: an older StableNew must not write to it.
    """
    applied: list[int] = []
    while True:
        conn.execute("BEGIN IMMEDIATE")
        try:
            current = schema_version(conn)
            if current > LATEST_VERSION:
                raise HistoryError(
                    f"history schema version {current} is newer than this StableNew "
                    f"supports ({LATEST_VERSION})"
                )
            if current >= target:
                conn.execute("COMMIT")
                return applied
            for statement in _statements(MIGRATIONS[current]):
                conn.execute(statement)
            conn.execute(f"PRAGMA user_version = {current + 1}")
            conn.execute("COMMIT")
            applied.append(current + 1)
        except BaseException:
            conn.execute("ROLLBACK")
            raise


def _statements(script: str) -> list[str]:
    """Split a script into complete statements (``executescript`` would COMMIT on its own)."""
    out: list[str] = []
    buf = ""
    for line in script.splitlines(keepends=True):
        if line.lstrip().startswith("--"):
            continue
        buf += line
        if sqlite3.complete_statement(buf):
            out.append(buf.strip())
            buf = ""
    if buf.strip():
        raise ValueError(f"incomplete SQL statement in migration: {buf!r}")
    return out
