"""The write paths of the SQLite store, each run inside one caller-owned transaction.

Submissions insert a ``jobs`` row and its ``submitted`` transition once; one with a flow run id
also creates that run of the job (once: runs are unique by flow run id). Re-recording only
fills what is missing (priority, reason, lineage, an earlier creation time). Status events
belong to a run: the one their ``flow_run_id`` names (created, as the job's next run, when the
job is known and the run is not), else the job's latest run, else the job itself. Each appends
a transition unless the same ``(job_id, flow_run_id, to_status, at)`` is there already (a
unique index; a repeat only fills a missing worker, error or outputs), judged legal against
that run's own previous status only. Run numbers follow creation time; the job's row mirrors
its latest run. See :mod:`stablenew.history._state` for how a run's status, times and attempts
move.
"""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Sequence
from operator import itemgetter
from typing import Any

from stablenew.history._state import (
    Job,
    Life,
    Run,
    add_run,
    apply,
    chunked,
    fill,
    is_newer,
    load,
)
from stablenew.history.models import PROMPT_HEAD_CHARS, StatusEvent, Submission, WriteStats, to_us
from stablenew.lifecycle import JobStatus, check_transition, is_legal_transition

SUBMITTED = JobStatus.SUBMITTED

__all__ = ["apply_events", "chunked", "insert_submissions"]

logger = logging.getLogger(__name__)

_INSERT_JOB = """
INSERT INTO jobs (
    job_id, flow_run_id, pack_id, pack_title, row_index, combo_index, variant_index,
    batch_index, prompt_head, model, sampler, steps, width, height, seed, record_json,
    status, status_at, priority, created_at, runs
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'submitted', ?, ?, ?, ?)
"""
_INSERT_RUN = """
INSERT INTO runs (
    flow_run_id, job_id, run_number, status, status_at, priority, created_at, attempts,
    parent_flow_run_id, parent_job_id, reason
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_INSERT_TRANSITION = """
INSERT OR IGNORE INTO transitions
    (job_id, flow_run_id, from_status, to_status, at, source, message, legal, attempt)
VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?)
"""
_FILL_JOB_PRIORITY = "UPDATE jobs SET priority = ? WHERE job_id = ? AND priority IS NULL"
_FILL_RUN = """
UPDATE runs SET priority = ?, reason = ?, parent_flow_run_id = ?, parent_job_id = ?,
    created_at = ? WHERE flow_run_id = ?
"""
_UPDATE_RUN = """
UPDATE runs SET status = ?, status_at = ?, queued_at = ?, started_at = ?, completed_at = ?,
    duration_s = ?, error = ?, worker = ?, outputs = ?, attempts = ?
WHERE id = ?
"""
_UPDATE_JOB = """
UPDATE jobs SET status = ?, status_at = ?, queued_at = ?, started_at = ?, completed_at = ?,
    duration_s = ?, error = ?, worker = ?, outputs = ?, flow_run_id = ?,
    priority = COALESCE(?, priority), runs = ?
WHERE id = ?
"""
# After a renumbering the latest run may be another one: copy it in SQL.
_MIRROR_LATEST = """
UPDATE jobs SET (status, status_at, queued_at, started_at, completed_at, duration_s, error,
    worker, outputs, flow_run_id, priority, runs) = (
    SELECT r.status, r.status_at, r.queued_at, r.started_at, r.completed_at, r.duration_s,
        r.error, r.worker, r.outputs, r.flow_run_id, COALESCE(r.priority, jobs.priority),
        r.run_number
    FROM runs r WHERE r.job_id = jobs.job_id ORDER BY r.run_number DESC LIMIT 1)
WHERE job_id = ?
"""


def _job_values(sub: Submission, at: int, job: Job) -> tuple[Any, ...]:
    rec = sub.record
    latest = job.latest
    return (
        rec.job_id,
        latest.flow_run_id if latest else None,
        rec.pack_id,
        rec.pack_title,
        rec.row_index,
        rec.combo_index,
        rec.variant_index,
        rec.batch_index,
        rec.prompt[:PROMPT_HEAD_CHARS],
        rec.model,
        rec.sampler,
        rec.steps,
        rec.width,
        rec.height,
        rec.seed,
        rec.model_dump_json(),
        latest.created_at if latest else at,
        (latest.priority if latest else None) or job.priority,
        at,
        job.runs,
    )


def _run_values(run: Run) -> tuple[Any, ...]:
    return (
        run.flow_run_id,
        run.job_id,
        run.run_number,
        run.status.value,
        run.status_at,
        run.priority,
        run.created_at,
        run.attempts,
        run.parent_flow_run_id,
        run.parent_job_id,
        run.reason,
    )


def _fill_run(run: Run, sub: Submission, at: int | None, job: Job) -> bool:
    """Fill what an earlier record of this run lacked; True when something changed."""
    before = (run.priority, run.reason, run.parent_flow_run_id, run.parent_job_id, run.created_at)
    run.priority = run.priority or sub.priority
    run.reason = run.reason or sub.reason
    run.parent_flow_run_id = run.parent_flow_run_id or sub.parent_flow_run_id
    run.parent_job_id = run.parent_job_id or sub.parent_job_id
    if at is not None and at < run.created_at:
        run.created_at = at
        job.reorder |= job.runs > 1
        if run.status is JobStatus.SUBMITTED and at < run.status_at:
            run.status_at = at
            run.dirty = True
    changed = before != (
        run.priority,
        run.reason,
        run.parent_flow_run_id,
        run.parent_job_id,
        run.created_at,
    )
    job.mirror |= changed and job.latest is run
    return changed


def insert_submissions(
    conn: sqlite3.Connection, submissions: Sequence[Submission], now_us: int
) -> WriteStats:
    unique: dict[tuple[str, str | None], Submission] = {}
    for sub in submissions:
        unique.setdefault((sub.record.job_id, sub.flow_run_id), sub)
    # In time order, so that the runs one batch creates are numbered as they were created.
    timed: list[tuple[int, int | None, Submission]] = []
    for sub in unique.values():
        explicit = to_us(sub.at) if sub.at is not None else None
        timed.append((now_us if explicit is None else explicit, explicit, sub))
    timed.sort(key=itemgetter(0))
    jobs, runs = load(
        conn,
        {job_id for job_id, _ in unique},
        {flow_run_id for _, flow_run_id in unique if flow_run_id is not None},
    )
    new_jobs: dict[str, tuple[Submission, int]] = {}
    new_runs: list[Run] = []
    filled: list[Run] = []
    priorities: list[tuple[str, str]] = []
    for at, explicit_at, sub in timed:
        job_id = sub.record.job_id
        job = jobs.get(job_id)
        if job is None:
            job = Job(job_id=job_id, priority=sub.priority, status=SUBMITTED, status_at=at)
            jobs[job_id] = job
            new_jobs[job_id] = (sub, at)
        elif job.priority is None and sub.priority is not None:
            job.priority = sub.priority
            if job_id not in new_jobs:
                priorities.append((sub.priority, job_id))
        if sub.flow_run_id is None:
            continue
        run = runs.get(sub.flow_run_id)
        if run is None:
            run = Run(
                flow_run_id=sub.flow_run_id,
                job_id=job_id,
                created_at=at,
                status=SUBMITTED,
                status_at=at,
                priority=sub.priority,
                reason=sub.reason,
                parent_flow_run_id=sub.parent_flow_run_id,
                parent_job_id=sub.parent_job_id,
            )
            runs[sub.flow_run_id] = run
            add_run(job, run)
            new_runs.append(run)
        elif run.job_id != job_id:
            logger.warning(
                "flow run %s belongs to job %s, not %s: submission skipped",
                sub.flow_run_id,
                run.job_id,
                job_id,
            )
        elif _fill_run(run, sub, explicit_at, job):
            filled.append(run)

    conn.executemany(
        _INSERT_JOB, [_job_values(sub, at, jobs[job_id]) for job_id, (sub, at) in new_jobs.items()]
    )
    conn.executemany(
        _INSERT_TRANSITION,
        [
            (job_id, None, None, JobStatus.SUBMITTED.value, at, "submit", None, 1, None)
            for job_id, (_, at) in new_jobs.items()
        ],
    )
    conn.executemany(_INSERT_RUN, [_run_values(r) for r in new_runs])
    conn.executemany(
        _FILL_RUN,
        [
            (
                r.priority,
                r.reason,
                r.parent_flow_run_id,
                r.parent_job_id,
                r.created_at,
                r.flow_run_id,
            )
            for r in filled
        ],
    )
    conn.executemany(_FILL_JOB_PRIORITY, priorities)
    _flush(conn, [r for r in filled if r.dirty], jobs, skip=new_jobs.keys())
    return WriteStats(
        jobs_added=len(new_jobs), runs_added=len(new_runs), transitions_added=len(new_jobs)
    )


def _status_before(
    conn: sqlite3.Connection, job_id: str, flow_run_id: str | None, at: int
) -> tuple[JobStatus, int | None]:
    """The run's (or job-level) status and attempt as recorded at ``at``."""
    row = conn.execute(
        "SELECT to_status, attempt FROM transitions"
        " WHERE job_id = ? AND COALESCE(flow_run_id, '') = ? AND at <= ?"
        " ORDER BY at DESC, id DESC LIMIT 1",
        (job_id, flow_run_id or "", at),
    ).fetchone()
    if row is None:
        return JobStatus.SUBMITTED, None
    return JobStatus(row[0]), row[1]


def apply_events(conn: sqlite3.Connection, events: Sequence[StatusEvent]) -> WriteStats:
    jobs, runs = load(
        conn,
        {e.job_id for e in events},
        {e.flow_run_id for e in events if e.flow_run_id is not None},
    )
    unknown: list[str] = []
    created: list[Run] = []
    added = 0
    for event in events:
        job = jobs.get(event.job_id)
        if job is None:
            unknown.append(event.job_id)
            continue
        at = to_us(event.at)
        run: Run | None
        if event.flow_run_id is None:
            run = job.latest
        else:
            run = runs.get(event.flow_run_id)
            if run is None:
                run = Run(
                    flow_run_id=event.flow_run_id,
                    job_id=job.job_id,
                    created_at=at,
                    status=SUBMITTED,
                    status_at=at,
                )
                runs[event.flow_run_id] = run
                add_run(job, run)
                run.id = conn.execute(_INSERT_RUN, _run_values(run)).lastrowid
                created.append(run)
            elif run.job_id != job.job_id:
                logger.warning(
                    "flow run %s belongs to job %s, not %s: event skipped",
                    event.flow_run_id,
                    run.job_id,
                    job.job_id,
                )
                continue
        life: Life = run if run is not None else job  # a job without runs keeps its own
        flow_run_id = run.flow_run_id if run is not None else None
        newer = is_newer(life, at)
        old: JobStatus
        old_attempt: int | None
        if newer:
            old, old_attempt = life.status, life.attempts
        else:
            old, old_attempt = _status_before(conn, job.job_id, flow_run_id, at)
        # Without an attempt, an event continues the attempt of the status it follows.
        attempt = event.attempt
        if attempt is None and run is not None:
            attempt = old_attempt or 1
        restart = attempt is not None and attempt > (old_attempt or 1)
        legal = is_legal_transition(old, event.status) or (
            restart and event.status is not JobStatus.SUBMITTED
        )
        cur = conn.execute(
            _INSERT_TRANSITION,
            (
                job.job_id,
                flow_run_id,
                old.value,
                event.status.value,
                at,
                event.source,
                event.message or event.error,
                int(legal),
                attempt,
            ),
        )
        if cur.rowcount == 0:  # this exact event was recorded before: fill gaps only
            if (attempt is None or attempt >= life.attempts) and fill(life, event):
                job.mirror |= run is job.latest
            continue
        added += 1
        if not legal:
            check_transition(run.label if run is not None else job.job_id, old, event.status)
        apply(life, event, at, newer, attempt)
        job.mirror |= run is job.latest
    _flush(conn, [r for r in runs.values() if r.dirty], jobs)
    return WriteStats(runs_added=len(created), transitions_added=added, unknown_jobs=tuple(unknown))


def _flush(
    conn: sqlite3.Connection,
    dirty_runs: Sequence[Run],
    jobs: dict[str, Job],
    skip: Any = (),
) -> None:
    """Write changed runs, renumber runs that arrived out of order, mirror latest runs."""
    conn.executemany(
        _UPDATE_RUN,
        [(*r.columns(), r.attempts, r.id) for r in dirty_runs],
    )
    reorder = [j for j in jobs.values() if j.reorder]
    for job in reorder:
        _renumber(conn, job.job_id)
    conn.executemany(
        _UPDATE_JOB,
        [
            j.mirror_columns()
            for j in jobs.values()
            if (j.mirror or (j.latest is None and j.dirty))
            and not j.reorder
            and j.job_id not in skip  # inserted just now, already as they are
        ],
    )
    conn.executemany(_MIRROR_LATEST, [(j.job_id,) for j in reorder])


def _renumber(conn: sqlite3.Connection, job_id: str) -> None:
    """Number the job's runs 1..n by creation time (ties: insertion order)."""
    ids = [
        r[0]
        for r in conn.execute(
            "SELECT id FROM runs WHERE job_id = ? ORDER BY created_at, id", (job_id,)
        )
    ]
    # Through negative numbers, so that no step collides with UNIQUE (job_id, run_number).
    conn.executemany(
        "UPDATE runs SET run_number = ? WHERE id = ?",
        [(-(i + 1), rid) for i, rid in enumerate(ids)],
    )
    conn.execute(
        "UPDATE runs SET run_number = -run_number WHERE job_id = ? AND run_number < 0", (job_id,)
    )
