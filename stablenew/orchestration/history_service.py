"""JobHistoryService: live jobs from Prefect, finished ones from the history store, and
``explain`` — everything known about one job in one place."""

from __future__ import annotations

from datetime import datetime
from typing import Any

from pydantic import BaseModel, Field

from stablenew.history import FilterArgs, JobRow, SqliteHistoryStore, Transition
from stablenew.lifecycle import JobStatus
from stablenew.orchestration.jobs import JobRef, JobService
from stablenew.records import NormalizedJobRecord
from stablenew.webui import describe_requests


class JobView(BaseModel):
    """A job as a dashboard shows it."""

    job_id: str
    name: str
    pack_id: str
    status: JobStatus
    is_active: bool
    priority: str | None = None
    queue_position: int | None = Field(default=None, description="1 = runs next.")
    model: str | None = None
    prompt_head: str | None = None
    size: str | None = None
    seed: int | None = None
    created_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_s: float | None = None
    last_error: str | None = None
    outputs: list[str] = Field(default_factory=list)


class TimelineStep(BaseModel):
    status: JobStatus
    at: datetime
    seconds_in_previous: float | None = None
    source: str
    message: str | None = None
    legal: bool = True


class Explanation(BaseModel):
    """Why a job looks the way it does: its record, provenance, timeline and WebUI request."""

    job: JobView
    record: NormalizedJobRecord
    provenance: dict[str, Any]
    timeline: list[TimelineStep]
    webui_requests: list[dict[str, Any]] = Field(
        description="The exact WebUI calls the record makes (images shown as placeholders)."
    )
    error: str | None = None


def view_from_row(row: JobRow) -> JobView:
    return JobView(
        job_id=row.job_id,
        name=row.record().run_name,
        pack_id=row.pack_id,
        status=row.status,
        is_active=row.status.is_active,
        priority=row.priority,
        model=row.model,
        prompt_head=row.prompt_head,
        size=f"{row.width}x{row.height}",
        seed=row.seed,
        created_at=row.created_at,
        started_at=row.started_at,
        completed_at=row.completed_at,
        duration_s=row.duration_s,
        last_error=row.error,
        outputs=list(row.outputs or ()),
    )


def _view_from_ref(ref: JobRef, position: int | None) -> JobView:
    return JobView(
        job_id=ref.job_id,
        name=ref.name,
        pack_id=ref.pack_id or "",
        status=ref.status,
        is_active=ref.status.is_active,
        priority=ref.priority,
        queue_position=position,
        created_at=ref.created,
        last_error=ref.message if ref.status == JobStatus.FAILED else None,
    )


def timeline(transitions: list[Transition]) -> list[TimelineStep]:
    steps: list[TimelineStep] = []
    for t in transitions:
        previous = steps[-1].at if steps else None
        steps.append(
            TimelineStep(
                status=t.to_status,
                at=t.at,
                seconds_in_previous=(t.at - previous).total_seconds() if previous else None,
                source=t.source,
                message=t.message,
                legal=t.legal,
            )
        )
    return steps


def provenance(record: NormalizedJobRecord) -> dict[str, Any]:
    return {
        "pack": record.pack_id,
        "pack_hash": record.pack_hash,
        "prompt_row": record.row_index,
        "prompt_template": record.prompt_template,
        "resolved_prompt": record.prompt,
        "negative_prompt": record.negative_prompt,
        "matrix_slot_values": record.matrix_slot_values,
        "matrix_combination": record.combo_index,
        "dynamic_prompt_variant": record.variant_index,
        "batch_index": record.batch_index,
        "seed": record.seed,
        "seed_policy": record.seed_policy,
        "loras": [lora.model_dump() for lora in record.loras],
        "embeddings": list(record.embeddings),
        "builder_version": record.builder_version,
    }


class JobHistoryService:
    def __init__(self, store: SqliteHistoryStore, jobs: JobService | None = None) -> None:
        self.store = store
        self.jobs = jobs or JobService()

    async def list_active(self) -> list[JobView]:
        """Live from Prefect: what generates, then what is staged, then what is queued; staged
        and queued jobs numbered in the order they will get the GPU."""
        state = await self.jobs.aqueue_state()
        generating = [_view_from_ref(r, None) for r in state.generating]
        waiting = [*state.staged, *state.pending]
        return generating + [_view_from_ref(r, i) for i, r in enumerate(waiting, 1)]

    def list_recent(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> list[JobView]:
        args: FilterArgs = filters  # type: ignore[assignment]
        page = self.store.list_jobs(limit=limit, offset=offset, **args)
        return [view_from_row(r) for r in page.items]

    def resolve_job_id(self, prefix: str) -> str:
        """The full id of the one recorded job ``prefix`` starts (or is); raises
        :class:`JobNotFound`, or :class:`AmbiguousJobId` listing a few candidates."""
        return self.store.resolve_job_id(prefix)

    def get(self, job_id: str) -> JobView:
        """The job with this id, or the one recorded job whose id starts with it."""
        return view_from_row(self.store.get_job(self.resolve_job_id(job_id)))

    def explain(self, job_id: str) -> Explanation:
        """Everything known about one job; ``job_id`` may be a unique prefix."""
        row = self.store.get_job(self.resolve_job_id(job_id))
        record = row.record()
        return Explanation(
            job=view_from_row(row),
            record=record,
            provenance=provenance(record),
            timeline=timeline(self.store.transitions(row.job_id)),
            webui_requests=[
                {"path": path, "body": body} for path, body in describe_requests(record)
            ],
            error=row.error,
        )
