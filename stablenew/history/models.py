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
    if type(when) is datetime:
        return (when - _EPOCH) // _MICROSECOND
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
    """A record accepted for execution: one future row of ``jobs`` and, with a flow run id,
    one run of it. Recording the same submission again adds nothing."""

    record: NormalizedJobRecord
    flow_run_id: str | None = Field(
        default=None, description="Prefect flow run, once known: creates that run of the job."
    )
    priority: str | None = Field(default=None, description="Queue name: urgent/high/normal/low.")
    at: datetime | None = Field(default=None, description="Submission time; now when unset.")
    reason: str | None = Field(
        default=None,
        description="Why this run exists: submit, duplicate, rerun, recovery (free text).",
    )
    parent_flow_run_id: str | None = Field(
        default=None, description="The flow run this run repeats (a re-run's lineage)."
    )
    parent_job_id: str | None = Field(
        default=None,
        description="The job this one was derived from (a re-run with a new seed has its own id).",
    )


class StatusEvent(_Frozen):
    """One observed status of a run of a job, as the exporter or a state hook saw it."""

    job_id: str
    status: JobStatus
    at: datetime = Field(description="When the run entered this status (Prefect's timestamp).")
    error: str | None = Field(default=None, description="Error message, for failures.")
    message: str | None = Field(default=None, description="Free text for the transition row.")
    source: str = Field(default="exporter", description="Who observed it: exporter, hook, ...")
    worker: str | None = Field(default=None, description="Worker that ran the job.")
    outputs: tuple[str, ...] | None = Field(default=None, description="Output paths, if known.")
    flow_run_id: str | None = Field(
        default=None,
        description="The run this event belongs to; an unknown one of a known job becomes its "
        "next run. None: the job's latest run (or the job itself before it has a run).",
    )
    attempt: int | None = Field(
        default=None,
        ge=1,
        description="Attempt of the run (1-based): Prefect's run_count for a running or "
        "finished run, run_count + 1 for one waiting to run again. A higher attempt than the "
        "run has seen starts a new attempt. None: the run's current attempt.",
    )


class WriteStats(_Frozen):
    """What a write call changed; all zeros when it repeated earlier writes."""

    jobs_added: int = 0
    runs_added: int = 0
    transitions_added: int = 0
    unknown_jobs: tuple[str, ...] = Field(
        default=(), description="Job ids of events skipped because no such job was recorded."
    )

    def __add__(self, other: WriteStats) -> WriteStats:
        return WriteStats(
            jobs_added=self.jobs_added + other.jobs_added,
            runs_added=self.runs_added + other.runs_added,
            transitions_added=self.transitions_added + other.transitions_added,
            unknown_jobs=self.unknown_jobs + other.unknown_jobs,
        )


class JobRow(_Frozen):
    """One row of ``jobs``: the summary, the verbatim record JSON and the current status.

    Status, times, duration, worker, outputs, error and ``flow_run_id`` are those of the job's
    latest run (highest ``run_number``); before any run is known, the job's own.
    """

    job_id: str
    flow_run_id: str | None = Field(description="Flow run of the latest run.")
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
    runs: int = Field(description="How many runs (Prefect flow runs) the job has had.")
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


class RunRow(_Frozen):
    """One row of ``runs``: one Prefect flow run of a job, with its own status, times, outputs,
    error and attempts (Prefect retries of the same flow run), and where it came from."""

    flow_run_id: str
    job_id: str
    run_number: int = Field(description="1-based, in creation order within the job.")
    status: JobStatus
    status_at: datetime = Field(description="Time of the event that set the current status.")
    priority: str | None
    worker: str | None
    created_at: datetime
    queued_at: datetime | None = Field(description="When its latest attempt was queued.")
    started_at: datetime | None = Field(description="When its latest attempt started running.")
    completed_at: datetime | None
    duration_s: float | None = Field(description="completed_at - started_at, when both known.")
    outputs: tuple[str, ...]
    error: str | None
    attempts: int = Field(description="Attempts seen so far (Prefect's run_count), at least 1.")
    parent_flow_run_id: str | None = Field(description="The run this one re-runs, if any.")
    parent_job_id: str | None = Field(description="The job this one's record derives from.")
    reason: str | None = Field(description="Why it exists: submit, duplicate, rerun, recovery.")

    @field_validator("outputs", mode="before")
    @classmethod
    def _outputs_from_json(cls, value: Any) -> Any:
        return tuple(json.loads(value)) if isinstance(value, str) else value


class Transition(_Frozen):
    """One append-only row of ``transitions``.

    ``from_status`` is the status the run had just before ``at`` as known when the row was
    written (``None`` for the submission itself); ``legal`` says whether the lifecycle allows
    the move, judged within the run only. Illegal moves are recorded anyway, because Prefect
    is the truth.
    """

    id: int
    job_id: str
    flow_run_id: str | None = Field(
        default=None, description="The run; None for the job's submission and legacy rows."
    )
    attempt: int | None = Field(default=None, description="Attempt of the run it belongs to.")
    from_status: JobStatus | None
    to_status: JobStatus
    at: datetime
    source: str
    message: str | None
    legal: bool


class Rating(_Frozen):
    """A person's judgement of a job (one per job; rating again replaces it)."""

    job_id: str
    flow_run_id: str | None = Field(
        default=None, description="The run whose images were judged (the latest, by default)."
    )
    stars: int | None = Field(default=None, ge=1, le=5, description="1..5; None: not rated.")
    note: str | None = None
    favourite: bool = False
    at: datetime = Field(description="When it was last changed.")


class FilterArgs(TypedDict, total=False):
    """Keyword filters shared by ``list_jobs``, ``count`` and ``export``."""

    status: JobStatus | str | list[JobStatus | str] | tuple[JobStatus | str, ...] | None
    pack: str | None
    model: str | None
    since: datetime | None
    until: datetime | None
    text: str | None
    rated: bool | None
    favourite: bool | None


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
    rated: bool | None = Field(default=None, description="True: has stars; False: has none.")
    favourite: bool | None = Field(default=None, description="True: favourites; False: not.")

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
