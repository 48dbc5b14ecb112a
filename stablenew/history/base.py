"""The history store contract: what the exporter writes and the history service reads.

Implementations: :class:`stablenew.history.sqlite.SqliteHistoryStore`. Every method raises
:class:`~stablenew.errors.HistoryError` when the storage fails (never a library exception),
and :class:`~stablenew.errors.JobNotFound` where a job id is required to exist (its subclass
`AmbiguousJobId` where a prefix names more than one).
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import datetime, timedelta
from pathlib import Path
from typing import Protocol, TextIO, runtime_checkable

from typing_extensions import Unpack

from stablenew.history.models import (
    ExportFormat,
    FilterArgs,
    JobRow,
    Order,
    Page,
    Rating,
    RunRow,
    StatusEvent,
    Submission,
    Transition,
    WriteStats,
)
from stablenew.lifecycle import JobStatus
from stablenew.records import NormalizedJobRecord


@runtime_checkable
class HistoryStore(Protocol):
    """Durable job history: one row per job, one per run of it (a Prefect flow run), and
    the append-only status transitions of each run."""

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
        ...

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
        """Append a transition of the run ``flow_run_id`` (the job's latest run when None;
        an unknown run of the job becomes its next run); idempotent by job, run, status and
        time. True when new."""
        ...

    def record_many(
        self,
        submissions: Iterable[NormalizedJobRecord | Submission] = (),
        events: Iterable[StatusEvent] = (),
        *,
        batch_size: int = 1000,
    ) -> WriteStats:
        """Submissions, then events, one transaction per ``batch_size`` items."""
        ...

    def get_job(self, job_id: str) -> JobRow:
        """The job; its status columns are its latest run's."""
        ...

    def runs_of(self, job_id: str) -> list[RunRow]:
        """The job's runs by run number (empty before any run is known)."""
        ...

    def get_run(self, flow_run_id: str) -> RunRow:
        """The run of this flow run; :class:`~stablenew.errors.JobNotFound` if unknown."""
        ...

    def open_flow_run_ids(self) -> list[str]:
        """Flow run ids of all runs not yet finished, latest of their job or not."""
        ...

    def resolve_job_id(self, prefix: str, *, candidates: int = 5) -> str:
        """The one job id equal to or starting with ``prefix`` (an exact id always wins)."""
        ...

    def transitions(self, job_id: str, flow_run_id: str | None = None) -> list[Transition]:
        """All of the job's transitions in time order, or those of one of its runs."""
        ...

    def list_jobs(
        self,
        *,
        limit: int = 50,
        offset: int = 0,
        order: Order = "created_desc",
        after: str | None = None,
        **filters: Unpack[FilterArgs],
    ) -> Page: ...

    def count(self, **filters: Unpack[FilterArgs]) -> int: ...

    def export(
        self,
        format: ExportFormat,
        out: TextIO | Path | str,
        *,
        order: Order = "created_asc",
        **filters: Unpack[FilterArgs],
    ) -> int: ...

    def prune(self, older_than: timedelta | None = None, keep_last: int | None = None) -> int: ...

    def rate(
        self,
        job_id: str,
        stars: int,
        *,
        note: str | None = None,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> Rating:
        """Give the job 1..5 stars (a note replaces the earlier one); one rating per job."""
        ...

    def set_favourite(
        self,
        job_id: str,
        favourite: bool | None = None,
        *,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> Rating:
        """Mark or unmark the job as a favourite; None toggles."""
        ...

    def rating(self, job_id: str) -> Rating | None: ...

    def ratings(self, job_ids: Iterable[str]) -> dict[str, Rating]: ...

    def rated_jobs(self, pack: str) -> list[tuple[JobRow, Rating]]:
        """The pack's jobs that have a rating or a favourite mark, oldest first."""
        ...

    def get_watermark(self, name: str = "prefect") -> str | None: ...

    def set_watermark(self, value: str, name: str = "prefect") -> None: ...

    def close(self) -> None: ...
