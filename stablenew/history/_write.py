"""The write paths of the SQLite store, each run inside one caller-owned transaction.

Submissions insert a ``jobs`` row and its ``submitted`` transition once; re-recording a job only
fills a missing flow run id or priority. Status events append a transition unless the same
``(job_id, to_status, at)`` is already there (a unique index), and move the current-status
columns only when the event is at least as new as the current status, so out-of-order or
repeated delivery converges on the same row. A recorded ``submitted`` always yields to a
Prefect-reported status, whose clock may run behind ours.
"""

from __future__ import annotations

import json
import sqlite3
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any, TypeVar

from stablenew.history.models import PROMPT_HEAD_CHARS, StatusEvent, Submission, WriteStats, to_us
from stablenew.lifecycle import JobStatus, check_transition, is_legal_transition

T = TypeVar("T")

_IN_CHUNK = 500  # well under SQLite's host-parameter limit

_INSERT_JOB = """
INSERT INTO jobs (
    job_id, flow_run_id, pack_id, pack_title, row_index, combo_index, variant_index,
    batch_index, prompt_head, model, sampler, steps, width, height, seed, record_json,
    status, status_at, priority, created_at
) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, 'submitted', ?, ?, ?)
"""
_INSERT_TRANSITION = """
INSERT OR IGNORE INTO transitions (job_id, from_status, to_status, at, source, message, legal)
VALUES (?, ?, ?, ?, ?, ?, ?)
"""
_FILL_SUBMISSION = """
UPDATE jobs SET flow_run_id = COALESCE(flow_run_id, ?1), priority = COALESCE(priority, ?2)
WHERE job_id = ?3 AND ((flow_run_id IS NULL AND ?1 IS NOT NULL)
                      OR (priority IS NULL AND ?2 IS NOT NULL))
"""
_UPDATE_STATUS = """
UPDATE jobs SET status = ?, status_at = ?, queued_at = ?, started_at = ?, completed_at = ?,
    duration_s = ?, error = ?, worker = ?, outputs = ?, flow_run_id = ?
WHERE id = ?
"""


def chunked(items: Iterable[T], size: int) -> Iterator[list[T]]:
    chunk: list[T] = []
    for item in items:
        chunk.append(item)
        if len(chunk) >= size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _in_list(n: int) -> str:
    return ", ".join("?" * n)


def insert_submissions(
    conn: sqlite3.Connection, submissions: Sequence[Submission], now_us: int
) -> WriteStats:
    unique: dict[str, Submission] = {}
    for sub in submissions:
        unique.setdefault(sub.record.job_id, sub)
    existing: set[str] = set()
    for ids in chunked(unique, _IN_CHUNK):
        sql = f"SELECT job_id FROM jobs WHERE job_id IN ({_in_list(len(ids))})"
        existing.update(row[0] for row in conn.execute(sql, ids))
    jobs: list[tuple[Any, ...]] = []
    transitions: list[tuple[Any, ...]] = []
    fills: list[tuple[Any, ...]] = []
    for job_id, sub in unique.items():
        if job_id in existing:
            if sub.flow_run_id is not None or sub.priority is not None:
                fills.append((sub.flow_run_id, sub.priority, job_id))
            continue
        rec = sub.record
        at = to_us(sub.at) if sub.at is not None else now_us
        jobs.append(
            (
                job_id,
                sub.flow_run_id,
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
                at,
                sub.priority,
                at,
            )
        )
        transitions.append((job_id, None, JobStatus.SUBMITTED.value, at, "submit", None, 1))
    conn.executemany(_INSERT_JOB, jobs)
    conn.executemany(_INSERT_TRANSITION, transitions)
    conn.executemany(_FILL_SUBMISSION, fills)
    return WriteStats(jobs_added=len(jobs), transitions_added=len(transitions))


@dataclass
class _State:
    """The current-status columns of one job while a batch of events is applied."""

    id: int
    status: JobStatus
    status_at: int
    queued_at: int | None
    started_at: int | None
    completed_at: int | None
    error: str | None
    worker: str | None
    outputs: str
    flow_run_id: str | None
    dirty: bool = False

    def params(self) -> tuple[Any, ...]:
        duration = None
        if self.completed_at is not None and self.started_at is not None:
            duration = max(self.completed_at - self.started_at, 0) / 1e6
        return (
            self.status.value,
            self.status_at,
            self.queued_at,
            self.started_at,
            self.completed_at,
            duration,
            self.error,
            self.worker,
            self.outputs,
            self.flow_run_id,
            self.id,
        )


def _load_states(conn: sqlite3.Connection, job_ids: Iterable[str]) -> dict[str, _State]:
    states: dict[str, _State] = {}
    for ids in chunked(job_ids, _IN_CHUNK):
        sql = (
            "SELECT id, job_id, status, status_at, queued_at, started_at, completed_at, error,"
            f" worker, outputs, flow_run_id FROM jobs WHERE job_id IN ({_in_list(len(ids))})"
        )
        for r in conn.execute(sql, ids):
            states[r["job_id"]] = _State(
                id=r["id"],
                status=JobStatus(r["status"]),
                status_at=r["status_at"],
                queued_at=r["queued_at"],
                started_at=r["started_at"],
                completed_at=r["completed_at"],
                error=r["error"],
                worker=r["worker"],
                outputs=r["outputs"],
                flow_run_id=r["flow_run_id"],
            )
    return states


def _status_before(conn: sqlite3.Connection, job_id: str, at: int) -> JobStatus:
    row = conn.execute(
        "SELECT to_status FROM transitions WHERE job_id = ? AND at <= ?"
        " ORDER BY at DESC, id DESC LIMIT 1",
        (job_id, at),
    ).fetchone()
    return JobStatus(row[0]) if row is not None else JobStatus.SUBMITTED


def apply_events(conn: sqlite3.Connection, events: Sequence[StatusEvent]) -> WriteStats:
    states = _load_states(conn, {e.job_id for e in events})
    unknown: list[str] = []
    added = 0
    for event in events:
        state = states.get(event.job_id)
        if state is None:
            unknown.append(event.job_id)
            continue
        at = to_us(event.at)
        newer = at >= state.status_at or state.status is JobStatus.SUBMITTED
        old = state.status if newer else _status_before(conn, event.job_id, at)
        legal = is_legal_transition(old, event.status)
        cur = conn.execute(
            _INSERT_TRANSITION,
            (
                event.job_id,
                old.value,
                event.status.value,
                at,
                event.source,
                event.message or event.error,
                int(legal),
            ),
        )
        if cur.rowcount == 0:
            continue  # this exact event was recorded before
        added += 1
        if not legal:
            check_transition(event.job_id, old, event.status)  # logs it
        _apply(state, event, at, newer)
    conn.executemany(_UPDATE_STATUS, [s.params() for s in states.values() if s.dirty])
    return WriteStats(transitions_added=added, unknown_jobs=tuple(unknown))


def _apply(state: _State, event: StatusEvent, at: int, newer: bool) -> None:
    state.dirty = True
    if event.status is JobStatus.QUEUED and (state.queued_at is None or at < state.queued_at):
        state.queued_at = at
    if event.status is JobStatus.RUNNING and (state.started_at is None or at < state.started_at):
        state.started_at = at
    if newer:
        state.status = event.status
        state.status_at = at
        state.completed_at = at if event.status.is_terminal else None
    if event.error is not None and (newer or state.error is None):
        state.error = event.error
    if event.worker is not None and (newer or state.worker is None):
        state.worker = event.worker
    if event.outputs is not None and (newer or state.outputs == "[]"):
        state.outputs = json.dumps(list(event.outputs))
    if state.flow_run_id is None:
        state.flow_run_id = event.flow_run_id
