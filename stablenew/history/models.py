"""Typed values the history store takes and returns.

Times are timezone-aware UTC ``datetime``s; a naive ``datetime`` passed in is taken as UTC.
The store keeps them as integer microseconds since the Unix epoch, so they round-trip exactly.
"""

from __future__ import annotations

import json
from datetime import UTC, datetime, timedelta
from typing import Any, Literal, TypedDict

from pydantic import BaseModel, ConfigDict, Field, field_validator

from stablenew.lifecycle import JobStatus
from stablenew.records import NormalizedJobRecord

Order = Literal["created_desc", "created_asc"]
ExportFormat = Literal["csv", "jsonl"]

PROMPT_HEAD_CHARS = 120
_EPOCH = datetime(1970, 1, 1, tzinfo=UTC)
_MICROSECOND = timedelta(microseconds=1)


def to_us(when: datetime) -> int:
    """Exact integer microseconds since the epoch; naive datetimes count as UTC."""
    if when.tzinfo is None:
        when = when.replace(tzinfo=UTC)
    # Subclasses (pendulum's DateTime, which Prefect returns) subtract to their own duration
    # type; compute on a plain datetime so the arithmetic stays exact.
    plain = datetime(
        when.year, when.month, when.day, when.hour, when.minute, when.second,
        when.microsecond, tzinfo=when.tzinfo,
    )  # fmt: skip
    return (plain - _EPOCH) // _MICROSECOND


def from_us(us: int) -> datetime:
    return _EPOCH + timedelta(microseconds=us)


def utcnow() -> datetime:
    return datetime.now(UTC)


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class Submission(_Frozen):
    """A record accepted for execution: one future row of ``jobs``."""

    record: NormalizedJobRecord
    flow_run_id: str | None = Field(default=None, description="Prefect flow run, once known.")
    priority: str | None = Field(default=None, description="Queue name: urgent/high/normal/low.")
    at: datetime | None = Field(default=None, description="Submission time; now when unset.")


class StatusEvent(_Frozen):
    """One observed status of a job, as the exporter or a state hook saw it."""

    job_id: str
    status: JobStatus
    at: datetime = Field(description="When the job entered this status (Prefect's timestamp).")
    error: str | None = Field(default=None, description="Error message, for failures.")
    message: str | None = Field(default=None, description="Free text for the transition row.")
    source: str = Field(default="exporter", description="Who observed it: exporter, hook, ...")
    worker: str | None = Field(default=None, description="Worker that ran the job.")
    outputs: tuple[str, ...] | None = Field(default=None, description="Output paths, if known.")
    flow_run_id: str | None = None


class WriteStats(_Frozen):
    """What a write call changed; all zeros when it repeated earlier writes."""

    jobs_added: int = 0
    transitions_added: int = 0
    unknown_jobs: tuple[str, ...] = Field(
        default=(), description="Job ids of events skipped because no such job was recorded."
    )

    def __add__(self, other: WriteStats) -> WriteStats:
        return WriteStats(
            jobs_added=self.jobs_added + other.jobs_added,
            transitions_added=self.transitions_added + other.transitions_added,
            unknown_jobs=self.unknown_jobs + other.unknown_jobs,
        )


class JobRow(_Frozen):
    """One row of ``jobs``: the summary, the verbatim record JSON and the current status."""

    job_id: str
    flow_run_id: str | None
    pack_id: str
    pack_title: str | None
    row_index: int
    combo_index: int
    variant_index: int
    batch_index: int
    prompt_head: str = Field(description=f"First {PROMPT_HEAD_CHARS} characters of the prompt.")
    model: str
    sampler: str
    steps: int
    width: int
    height: int
    seed: int
    status: JobStatus
    status_at: datetime = Field(description="Time of the event that set the current status.")
    priority: str | None
    worker: str | None
    created_at: datetime
    queued_at: datetime | None
    started_at: datetime | None
    completed_at: datetime | None
    duration_s: float | None = Field(description="completed_at - started_at, when both known.")
    outputs: tuple[str, ...]
    error: str | None
    record_json: str = Field(description="Exactly NormalizedJobRecord.model_dump_json().")
    cursor: str = Field(description="Keyset cursor of this row for list_jobs(after=...).")

    def record(self) -> NormalizedJobRecord:
        return NormalizedJobRecord.model_validate_json(self.record_json)

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_from_json(cls, value: Any) -> Any:
        return tuple(json.loads(value)) if isinstance(value, str) else value


class Transition(_Frozen):
    """One append-only row of ``transitions``.

    ``from_status`` is the status the job had just before ``at`` as known when the row was
    written (``None`` for the submission itself); ``legal`` says whether the lifecycle allows
    the move. Illegal moves are recorded anyway, because Prefect is the truth.
    """

    id: int
    job_id: str
    from_status: JobStatus | None
    to_status: JobStatus
    at: datetime
    source: str
    message: str | None
    legal: bool


class FilterArgs(TypedDict, total=False):
    """Keyword filters shared by ``list_jobs``, ``count`` and ``export``."""

    status: JobStatus | str | list[JobStatus | str] | tuple[JobStatus | str, ...] | None
    pack: str | None
    model: str | None
    since: datetime | None
    until: datetime | None
    text: str | None


class JobFilter(_Frozen):
    """Filters; all given ones must match (AND)."""

    status: tuple[JobStatus, ...] | None = Field(default=None, description="Any of these.")
    pack: str | None = Field(default=None, description="pack_id, exact.")
    model: str | None = Field(default=None, description="Checkpoint, exact.")
    since: datetime | None = Field(default=None, description="created_at >= since.")
    until: datetime | None = Field(default=None, description="created_at < until.")
    text: str | None = Field(
        default=None,
        description="Case-insensitive (ASCII) substring of the full positive prompt.",
    )

    @field_validator("status", mode="before")
    @classmethod
    def _one_or_many(cls, value: Any) -> Any:
        return (value,) if isinstance(value, str) else value


class Page(_Frozen):
    """One page of ``list_jobs``. ``next_cursor`` continues with ``after=`` (fast at any depth)."""

    items: tuple[JobRow, ...]
    limit: int
    offset: int
    order: Order
    next_cursor: str | None = Field(description="None on the last page.")
