"""In-memory state of the jobs and runs one write batch touches, and the rules that move it.

A batch loads the status columns of its jobs, of their latest runs and of the runs its events
name, applies every submission or event to those objects (appending transitions as it goes),
then writes back only what changed. A job's status columns mirror its latest run; a job with
no run yet (recorded before any flow run was known) carries its own, as before runs existed.

Ordering rules, per run: a status moves only forward in time (``at >= status_at``), except
that a recorded ``submitted`` always yields to a Prefect-reported status, whose clock may run
behind ours; so out-of-order or repeated delivery converges on the same row. A higher
``attempt`` than the run has seen starts a new attempt: its times, error and outputs replace
the previous attempt's, and whatever the previous attempt ended in may move to the new one.
Events of an earlier attempt never fill the current attempt's fields.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Any, TypeVar

from stablenew.history.models import StatusEvent
from stablenew.lifecycle import JobStatus

T = TypeVar("T")

IN_CHUNK = 500  # well under SQLite's host-parameter limit


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    if size < 1:
        raise ValueError("batch size must be >= 1")
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def in_list(n: int) -> str:
    return ", ".join("?" * n)


@dataclass(slots=True, kw_only=True)
class Life:
    """The status columns of one run, or of a job (its own, used while it has no run)."""

    status: JobStatus
    status_at: int
    queued_at: int | None = None
    started_at: int | None = None
    completed_at: int | None = None
    error: str | None = None
    worker: str | None = None
    outputs: str = "[]"
    attempts: int = 1
    dirty: bool = False

    def duration(self) -> float | None:
        if self.completed_at is None or self.started_at is None:
            return None
        return max(self.completed_at - self.started_at, 0) / 1e6

    def columns(self) -> tuple[Any, ...]:
        """status .. outputs, in the order of the UPDATE statements."""
        return (
            self.status.value,
            self.status_at,
            self.queued_at,
            self.started_at,
            self.completed_at,
            self.duration(),
            self.error,
            self.worker,
            self.outputs,
        )


# One object per run and per job (not a Life beside each): a batch holds tens of thousands,
# and every extra object is more work for the garbage collector.
@dataclass(slots=True, kw_only=True)
class Run(Life):
    id: int | None = None  # None until inserted
    flow_run_id: str
    job_id: str
    run_number: int = 0
    created_at: int
    priority: str | None = None
    reason: str | None = None
    parent_flow_run_id: str | None = None
    parent_job_id: str | None = None

    @property
    def label(self) -> str:
        return f"{self.job_id} run {self.run_number}"


@dataclass(slots=True, kw_only=True)
class Job(Life):
    id: int | None = None  # None until inserted
    job_id: str
    runs: int = 0
    priority: str | None = None
    latest: Run | None = None
    mirror: bool = False  # its row must be rewritten from ``latest`` (or its own columns)
    reorder: bool = False  # a run arrived out of creation order: renumber its runs

    def mirror_columns(self) -> tuple[Any, ...]:
        """For ``UPDATE_JOB``: the latest run's status columns, flow run, priority, count."""
        if self.latest is not None:
            run = self.latest
            return (*run.columns(), run.flow_run_id, run.priority, self.runs, self.id)
        return (*self.columns(), None, None, self.runs, self.id)


# One query per chunk of job ids: each job with its latest run (NULLs when it has none).
# Plain tuples, read by position: this runs for every job a batch touches.
_LIFE = ("status", "status_at", "queued_at", "started_at", "completed_at", "error", "worker")
_JOB_AND_LATEST = (
    "SELECT j.id, j.job_id, j.runs, j.priority, "
    + ", ".join(f"j.{c}" for c in (*_LIFE, "outputs"))
    + ", r.id, r.flow_run_id, r.run_number, r.created_at, r.priority, r.reason,"
    " r.parent_flow_run_id, r.parent_job_id, r.attempts, "
    + ", ".join(f"r.{c}" for c in (*_LIFE, "outputs"))
    + " FROM jobs j LEFT JOIN runs r ON r.job_id = j.job_id AND r.run_number = j.runs"
    " WHERE j.job_id IN ({marks})"
)
_RUNS = (
    "SELECT r.id, r.flow_run_id, r.run_number, r.created_at, r.priority, r.reason,"
    " r.parent_flow_run_id, r.parent_job_id, r.attempts, "
    + ", ".join(f"r.{c}" for c in (*_LIFE, "outputs"))
    + ", r.job_id FROM runs r WHERE r.flow_run_id IN ({marks})"
)


def _run(r: tuple[Any, ...], job_id: str) -> Run:
    """From the columns id .. outputs of ``_RUNS`` (17 of them)."""
    return Run(
        id=r[0],
        flow_run_id=r[1],
        job_id=job_id,
        run_number=r[2],
        created_at=r[3],
        priority=r[4],
        reason=r[5],
        parent_flow_run_id=r[6],
        parent_job_id=r[7],
        attempts=r[8],
        status=JobStatus(r[9]),
        status_at=r[10],
        queued_at=r[11],
        started_at=r[12],
        completed_at=r[13],
        error=r[14],
        worker=r[15],
        outputs=r[16],
    )


def load(
    conn: sqlite3.Connection, job_ids: Iterable[str], flow_run_ids: Iterable[str]
) -> tuple[dict[str, Job], dict[str, Run]]:
    """The jobs (with their latest run) and the runs named, keyed by job id and flow run id."""
    jobs: dict[str, Job] = {}
    runs: dict[str, Run] = {}
    cursor = conn.cursor()
    cursor.row_factory = None
    try:
        for ids in chunked(job_ids, IN_CHUNK):
            for r in cursor.execute(_JOB_AND_LATEST.format(marks=in_list(len(ids))), ids):
                job = jobs[r[1]] = Job(
                    id=r[0],
                    job_id=r[1],
                    runs=r[2],
                    priority=r[3],
                    status=JobStatus(r[4]),
                    status_at=r[5],
                    queued_at=r[6],
                    started_at=r[7],
                    completed_at=r[8],
                    error=r[9],
                    worker=r[10],
                    outputs=r[11],
                )
                if r[12] is not None:
                    runs[r[13]] = job.latest = _run(r[12:], r[1])
        wanted = [f for f in set(flow_run_ids) if f not in runs]
        for ids in chunked(wanted, IN_CHUNK):
            for r in cursor.execute(_RUNS.format(marks=in_list(len(ids))), ids):
                runs[r[1]] = _run(r, r[17])
    finally:
        cursor.close()
    return jobs, runs


def add_run(job: Job, run: Run) -> None:
    """Make ``run`` the job's next run; it is the latest unless created before the latest."""
    job.runs += 1
    run.run_number = job.runs
    job.mirror = True
    if job.latest is not None and run.created_at < job.latest.created_at:
        job.reorder = True  # numbered last for now; renumbered by creation time on write
    else:
        job.latest = run


def is_newer(life: Life, at: int) -> bool:
    return at >= life.status_at or life.status is JobStatus.SUBMITTED


def apply(life: Life, event: StatusEvent, at: int, newer: bool, attempt: int | None) -> None:
    """Move ``life`` by a newly recorded transition (see the module doc for the rules)."""
    life.dirty = True
    if attempt is not None and attempt > life.attempts:
        life.attempts = attempt
        if newer:  # a new attempt: what the earlier one did no longer describes the run
            life.queued_at = life.started_at = life.completed_at = None
            life.error = None
            life.outputs = "[]"
    stale = attempt is not None and attempt < life.attempts
    if not stale:
        if event.status is JobStatus.QUEUED and (life.queued_at is None or at < life.queued_at):
            life.queued_at = at
        if event.status is JobStatus.RUNNING and (life.started_at is None or at < life.started_at):
            life.started_at = at
    if newer:
        life.status = event.status
        life.status_at = at
        life.completed_at = at if event.status.is_terminal else None
    if newer or not stale:
        fill(life, event, replace=newer)


def fill(life: Life, event: StatusEvent, *, replace: bool = False) -> bool:
    """Set error, worker and outputs from the event where given (only where missing unless
    ``replace``); returns whether anything changed."""
    changed = False
    if event.error is not None and (replace or life.error is None) and life.error != event.error:
        life.error = event.error
        changed = True
    if event.worker is not None and (replace or life.worker is None):
        changed |= life.worker != event.worker
        life.worker = event.worker
    if event.outputs is not None and (replace or life.outputs == "[]"):
        outputs = json.dumps(list(event.outputs))
        changed |= life.outputs != outputs
        life.outputs = outputs
    life.dirty |= changed
    return changed
