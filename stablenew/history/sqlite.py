"""The SQLite history store (default backend).

Safe for concurrent readers and one writer across threads and processes: WAL journal, a
process-wide write lock, ``BEGIN IMMEDIATE`` transactions kept short (one per batch), and
retries while another process holds the lock (see :mod:`stablenew.history._connection`).

Paging: ``list_jobs(after=page.next_cursor)`` (keyset) costs the same at any depth (~1 ms
for status + pack at 1,000,000 jobs); ``offset=`` walks the skipped index entries (ids only),
so it grows linearly: ~14-20 ms at 490,000 deep on 2 vCPUs. ``count`` walks the filter's
index range (~15 ms for 490,000 matches). ``text=`` scans the full prompt of every candidate
row (~2 s over 1,000,000): narrow it with other filters.

Jobs and runs: a job (its record, its deterministic id) has one run per Prefect flow run of
it; each run keeps its own status, times, outputs, error, attempts and transitions, and the
job's row mirrors its latest run. Reading one job (``get_job`` + ``runs_of`` +
``transitions``) is three index seeks, well under a millisecond at 1,000,000 jobs.

Crash safety: every write, and every migration step with its version bump, is one
transaction, so a crash leaves the last committed state and nothing half-applied; WAL recovery
on the next open replays or discards the tail. Jobs a dead worker left "running" are the
exporter's to settle from Prefect's CRASHED state.
"""

from __future__ import annotations

import contextlib
import functools
import sqlite3
from collections.abc import Iterable, Iterator
from datetime import datetime, timedelta
from pathlib import Path
from typing import TextIO

from typing_extensions import Unpack

from stablenew.errors import AmbiguousJobId, HistoryError, JobNotFound
from stablenew.history import _query, _write
from stablenew.history._connection import Database, translate_errors
from stablenew.history._export import write_export
from stablenew.history._ratings import RatingsMixin
from stablenew.history.models import (
    ExportFormat,
    FilterArgs,
    JobFilter,
    JobRow,
    Order,
    Page,
    RunRow,
    StatusEvent,
    Submission,
    Transition,
    WriteStats,
    to_us,
    utcnow,
)
from stablenew.lifecycle import JobStatus
from stablenew.records import NormalizedJobRecord

_TERMINAL = tuple(s.value for s in JobStatus if s.is_terminal)
# Matches the partial index ix_runs_open exactly, so that the query can use it.
_OPEN_RUNS = "status IN ('submitted', 'queued', 'running', 'cancelling')"
_PRUNE_CHUNK = 5000


def path_from_url(url: str | Path) -> Path:
    """``sqlite:///relative/or/abs/path.db`` (or a plain path) to a path."""
    if isinstance(url, Path):
        return url
    if url.startswith("sqlite:///"):
        return Path(url.removeprefix("sqlite:///"))
    if "://" in url:
        raise HistoryError(f"unsupported history URL {url!r}; expected sqlite:///path")
    return Path(url)


def _run_not_found(flow_run_id: str, job_id: str | None = None) -> JobNotFound:
    """:class:`JobNotFound` (what callers catch for an unknown id) naming the flow run."""
    error = JobNotFound(job_id or flow_run_id)
    of = f" of job {job_id!r}" if job_id else ""
    error.args = (f"no run with flow run id {flow_run_id!r}{of}",)
    return error


def open_store(url: str | Path, *, read_only: bool = False) -> SqliteHistoryStore:
    """Open (creating and migrating as needed) the store at ``Settings.resolved_history_url``."""
    return SqliteHistoryStore(url, read_only=read_only)


class SqliteHistoryStore(RatingsMixin):
    """The :class:`~stablenew.history.base.HistoryStore` on one SQLite file (ratings and
    favourites: :class:`~stablenew.history._ratings.RatingsMixin`)."""

    def __init__(
        self,
        path_or_url: str | Path,
        *,
        busy_timeout_s: float = 5.0,
        write_retries: int = 5,
        read_only: bool = False,
    ) -> None:
        self.path = path_from_url(path_or_url)
        self._db = Database(
            self.path,
            busy_timeout_s=busy_timeout_s,
            write_retries=write_retries,
            read_only=read_only,
        )

    def __enter__(self) -> SqliteHistoryStore:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def close(self) -> None:
        self._db.close()

    # -- writes -----------------------------------------------------------------------------

    def record_submission(
        self,
        record: NormalizedJobRecord,
        *,
        flow_run_id: str | None = None,
        priority: str | None = None,
        at: datetime | None = None,
        reason: str | None = None,
        parent_flow_run_id: str | None = None,
        parent_job_id: str | None = None,
    ) -> bool:
        """Store the record once (idempotent by job id) and, with ``flow_run_id``, that run of
        it (idempotent by flow run id); True when the job is new."""
        sub = Submission(
            record=record,
            flow_run_id=flow_run_id,
            priority=priority,
            at=at,
            reason=reason,
            parent_flow_run_id=parent_flow_run_id,
            parent_job_id=parent_job_id,
        )
        now = to_us(utcnow())
        stats = self._db.write("submission", lambda c: _write.insert_submissions(c, [sub], now))
        return stats.jobs_added == 1

    def record_transition(
        self,
        job_id: str,
        status: JobStatus,
        at: datetime,
        *,
        error: str | None = None,
        source: str = "exporter",
        worker: str | None = None,
        outputs: Iterable[str] | None = None,
        flow_run_id: str | None = None,
        message: str | None = None,
        attempt: int | None = None,
    ) -> bool:
        """Append a transition of the run ``flow_run_id`` (the job's latest run when None);
        idempotent by job, run, status and time. True when new."""
        event = StatusEvent(
            job_id=job_id,
            status=status,
            at=at,
            error=error,
            source=source,
            worker=worker,
            outputs=tuple(outputs) if outputs is not None else None,
            flow_run_id=flow_run_id,
            message=message,
            attempt=attempt,
        )
        stats = self._db.write("transition", lambda c: _write.apply_events(c, [event]))
        if stats.unknown_jobs:
            raise JobNotFound(job_id)
        return stats.transitions_added == 1

    def record_many(
        self,
        submissions: Iterable[NormalizedJobRecord | Submission] = (),
        events: Iterable[StatusEvent] = (),
        *,
        batch_size: int = 1000,
    ) -> WriteStats:
        """Bulk path: submissions first, then events, one transaction per batch.

        Events for jobs never submitted are skipped and listed in ``unknown_jobs``; an event
        naming an unknown flow run of a known job creates that run. Each batch commits on its
        own: on error, earlier batches stay (re-running the call is harmless).
        """
        stats = WriteStats()
        subs = (s if isinstance(s, Submission) else Submission(record=s) for s in submissions)
        for chunk in _write.chunked(subs, batch_size):
            insert = functools.partial(
                _write.insert_submissions, submissions=chunk, now_us=to_us(utcnow())
            )
            stats += self._db.write("submission batch", insert)
        for ev_chunk in _write.chunked(events, batch_size):
            apply = functools.partial(_write.apply_events, events=ev_chunk)
            stats += self._db.write("transition batch", apply)
        return stats

    def prune(self, older_than: timedelta | None = None, keep_last: int | None = None) -> int:
        """Delete finished jobs (with their runs and transitions) by age and/or beyond the
        newest N.

        Only terminal jobs (whose latest run is finished) go; queued or running ones stay
        whatever their age. With both arguments a job is deleted when it is older than
        ``older_than`` and not among the ``keep_last`` most recently created jobs. Returns the
        number of jobs deleted.
        """
        if older_than is None and keep_last is None:
            raise ValueError("prune needs older_than, keep_last or both")
        if keep_last is not None and keep_last < 0:
            raise ValueError("keep_last must be >= 0")
        clauses = [f"status IN ({', '.join('?' * len(_TERMINAL))})"]
        params: list[object] = list(_TERMINAL)
        if older_than is not None:
            clauses.append("created_at < ?")
            params.append(to_us(utcnow() - older_than))
        if keep_last is not None and keep_last > 0:
            with translate_errors("prune", self.path):
                edge = (
                    self._db.reader()
                    .execute(
                        "SELECT created_at, id FROM jobs ORDER BY created_at DESC, id DESC"
                        " LIMIT 1 OFFSET ?",
                        (keep_last - 1,),
                    )
                    .fetchone()
                )
            if edge is None:
                return 0  # fewer jobs than keep_last
            clauses.append("(created_at, id) < (?, ?)")
            params.extend(edge)
        select = f"SELECT id FROM jobs WHERE {' AND '.join(clauses)} LIMIT {_PRUNE_CHUNK}"
        deleted = 0
        while True:
            n = self._db.write(
                "prune",
                lambda c: c.execute(f"DELETE FROM jobs WHERE id IN ({select})", params).rowcount,
            )
            deleted += n
            if n < _PRUNE_CHUNK:
                return deleted

    def set_watermark(self, value: str, name: str = "prefect") -> None:
        self._db.write(
            "watermark",
            lambda c: c.execute(
                "INSERT INTO meta (key, value) VALUES (?, ?)"
                " ON CONFLICT(key) DO UPDATE SET value = excluded.value",
                (f"watermark:{name}", value),
            ),
        )

    # -- reads ------------------------------------------------------------------------------

    @contextlib.contextmanager
    def _reading(self, what: str) -> Iterator[sqlite3.Connection]:
        with translate_errors(what, self.path):
            yield self._db.reader()

    def get_watermark(self, name: str = "prefect") -> str | None:
        with self._reading("watermark") as conn:
            row = conn.execute(
                "SELECT value FROM meta WHERE key = ?", (f"watermark:{name}",)
            ).fetchone()
        return None if row is None else str(row[0])

    def get_job(self, job_id: str) -> JobRow:
        with self._reading("get") as conn:
            row = conn.execute(f"{_query.SELECT_JOBS} WHERE job_id = ?", (job_id,)).fetchone()
        if row is None:
            raise JobNotFound(job_id)
        return _query.job_row(row)

    def resolve_job_id(self, prefix: str, *, candidates: int = 5) -> str:
        """The one job id equal to or starting with ``prefix``: what a person pasted or typed.

        An exact id wins even when longer ids start with it. Raises :class:`JobNotFound` when
        none matches (or ``prefix`` is blank) and :class:`AmbiguousJobId` with the first
        ``candidates`` matches when several do. One index range seek, ~0.1 ms at any size.
        """
        prefix = prefix.strip()
        if not prefix:
            raise JobNotFound(prefix)
        sql, params = _query.prefix_sql(prefix, candidates + 1)
        with self._reading("resolve") as conn:
            found = [str(r[0]) for r in conn.execute(sql, params).fetchall()]
        if not found:
            raise JobNotFound(prefix)
        if len(found) == 1 or found[0] == prefix:  # in id order, an exact id comes first
            return found[0]
        raise AmbiguousJobId(prefix, found[:candidates], more=len(found) > candidates)

    def transitions(self, job_id: str, flow_run_id: str | None = None) -> list[Transition]:
        """The job's transitions in time order (ties in recording order): all of them, or
        those of the run ``flow_run_id`` only (the job's own ``submitted`` has no run)."""
        sql = f"{_query.SELECT_TRANSITIONS} WHERE job_id = ?"
        params: list[object] = [job_id]
        if flow_run_id is not None:
            sql += " AND COALESCE(flow_run_id, '') = ?"
            params.append(flow_run_id)
        with self._reading("transitions") as conn:
            rows = conn.execute(f"{sql} ORDER BY at, id", params).fetchall()
            if not rows:
                self._check_exists(conn, job_id, flow_run_id)
        return [_query.transition(r) for r in rows]

    def runs_of(self, job_id: str) -> list[RunRow]:
        """The job's runs, by run number (oldest first); empty before any run is known."""
        with self._reading("runs") as conn:
            rows = conn.execute(
                f"{_query.SELECT_RUNS} WHERE job_id = ? ORDER BY run_number", (job_id,)
            ).fetchall()
            if not rows:
                self._check_exists(conn, job_id)
        return [_query.run_row(r) for r in rows]

    def get_run(self, flow_run_id: str) -> RunRow:
        """The run of this Prefect flow run; :class:`JobNotFound` when none is recorded."""
        with self._reading("get run") as conn:
            row = conn.execute(
                f"{_query.SELECT_RUNS} WHERE flow_run_id = ?", (flow_run_id,)
            ).fetchone()
        if row is None:
            raise _run_not_found(flow_run_id)
        return _query.run_row(row)

    def open_flow_run_ids(self) -> list[str]:
        """Flow runs of every run not yet finished (submitted, queued, running, cancelling),
        whether or not it is its job's latest: what a sync must re-read from Prefect."""
        with self._reading("open runs") as conn:
            rows = conn.execute(f"SELECT flow_run_id FROM runs WHERE {_OPEN_RUNS}").fetchall()
        return [str(r[0]) for r in rows]

    @staticmethod
    def _check_exists(
        conn: sqlite3.Connection, job_id: str, flow_run_id: str | None = None
    ) -> None:
        if conn.execute("SELECT 1 FROM jobs WHERE job_id = ?", (job_id,)).fetchone() is None:
            raise JobNotFound(job_id)
        if flow_run_id is not None:
            found = conn.execute(
                "SELECT 1 FROM runs WHERE flow_run_id = ? AND job_id = ?", (flow_run_id, job_id)
            ).fetchone()
            if found is None:
                raise _run_not_found(flow_run_id, job_id)

    def list_jobs(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        order: Order = "created_desc",
        after: str | None = None,
        **filters: Unpack[FilterArgs],
    ) -> Page:
        """One page of jobs matching ``filters``; see the module doc on offset vs. ``after``."""
        if limit < 1 or offset < 0:
            raise ValueError("limit must be >= 1 and offset >= 0")
        sql, params = _query.page_sql(JobFilter(**filters), order, after, limit + 1, offset)
        with self._reading("list") as conn:
            rows = conn.execute(sql, params).fetchall()
        items = tuple(_query.job_row(r) for r in rows[:limit])
        more = len(rows) > limit
        return Page(
            items=items,
            limit=limit,
            offset=offset,
            order=order,
            next_cursor=items[-1].cursor if more else None,
        )

    def count(self, **filters: Unpack[FilterArgs]) -> int:
        where_sql, params = _query.where(JobFilter(**filters))
        with self._reading("count") as conn:
            row = conn.execute(f"SELECT count(*) FROM jobs{where_sql}", params).fetchone()
        return int(row[0])

    def export(
        self,
        format: ExportFormat,
        out: TextIO | Path | str,
        *,
        order: Order = "created_asc",
        **filters: Unpack[FilterArgs],
    ) -> int:
        """Stream matching jobs to ``out`` (a text stream, or a path written as UTF-8).

        Memory stays flat whatever the row count. Returns the number of rows written.
        """
        where_sql, params = _query.where(JobFilter(**filters))
        order_by = _query.ORDERS[order][0]
        if isinstance(out, str | Path):
            with open(out, "w", encoding="utf-8", newline="") as fh:
                return self.export(format, fh, order=order, **filters)
        with self._reading("export") as conn:
            return write_export(conn, format, out, where_sql, params, order_by)
