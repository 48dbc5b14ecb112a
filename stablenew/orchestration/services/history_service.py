"""JobHistoryService: live jobs from Prefect, finished ones from the history store, and
``explain`` — everything known about one job (and each of its runs) in one place.

Reads are current: before answering, the service copies what changed in Prefect into the
store (one request for one job whose runs are not all finished, or that the store does not
know yet; an incremental sync for lists), so a run that finished a moment ago is there
without waiting for the minutely export. With no Prefect server to ask, it answers from the
store as last synced.
"""

from __future__ import annotations

import asyncio
import logging
import threading
from collections.abc import Coroutine
from datetime import datetime
from typing import Any, TypeVar

from pydantic import BaseModel, Field

from stablenew.errors import AmbiguousJobId, HistoryError, JobNotFound, PrefectUnavailable
from stablenew.history import FilterArgs, JobRow, Rating, RunRow, SqliteHistoryStore, Transition
from stablenew.history.learn import LearnReport, learn
from stablenew.lifecycle import JobStatus
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.queue_view import JobRef
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings
from stablenew.webui import describe_requests

logger = logging.getLogger(__name__)

T = TypeVar("T")


def _run(coro: Coroutine[Any, Any, T]) -> T:
    """Run a coroutine from sync code, also when the caller already runs an event loop."""
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        return asyncio.run(coro)
    result: list[T] = []
    errors: list[BaseException] = []

    def target() -> None:
        try:
            result.append(asyncio.run(coro))
        except BaseException as e:
            errors.append(e)

    thread = threading.Thread(target=target, name="stablenew-history-refresh")
    thread.start()
    thread.join()
    if errors:
        raise errors[0]
    return result[0]


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
    run_count: int = Field(
        default=0, description="Runs (Prefect flow runs) of the job; the figures are the latest's."
    )
    stars: int | None = Field(default=None, description="Its rating, 1..5, if rated.")
    favourite: bool = False
    rating_note: str | None = None


class RunView(BaseModel):
    """One run of a job: one Prefect flow run, with its own status, times and outputs."""

    number: int = Field(description="1-based, in creation order within the job.")
    flow_run_id: str
    status: JobStatus
    created_at: datetime
    queued_at: datetime | None = None
    started_at: datetime | None = None
    completed_at: datetime | None = None
    duration_s: float | None = None
    worker: str | None = None
    priority: str | None = None
    attempts: int = Field(default=1, description="Prefect attempts of this flow run (retries).")
    reason: str | None = Field(
        default=None, description="Why the run exists: submit, duplicate, rerun, recovery."
    )
    parent_flow_run_id: str | None = Field(default=None, description="The run this re-runs.")
    parent_run: int | None = Field(
        default=None, description="Number of the run this re-runs, when it is of the same job."
    )
    parent_job_id: str | None = Field(
        default=None, description="The job this one derives from (a re-run with a new seed)."
    )
    outputs: list[str] = Field(default_factory=list)
    error: str | None = None


class JobDetail(JobView):
    """A job with every run of it, oldest first (``history show``)."""

    runs: list[RunView] = Field(default_factory=list)


class TimelineStep(BaseModel):
    status: JobStatus
    at: datetime
    seconds_in_previous: float | None = None
    source: str
    message: str | None = None
    legal: bool = True
    attempt: int | None = Field(default=None, description="Attempt of the run, when known.")


class Explanation(BaseModel):
    """Why a job looks the way it does: its record, provenance, the timeline of one of its
    runs, its other runs, and the WebUI request."""

    job: JobView
    record: NormalizedJobRecord
    provenance: dict[str, Any]
    run: RunView | None = Field(
        default=None, description="The run the timeline is of (the latest unless chosen)."
    )
    runs: list[RunView] = Field(default_factory=list, description="Every run, oldest first.")
    timeline: list[TimelineStep]
    webui_requests: list[dict[str, Any]] = Field(
        description="The exact WebUI calls the record makes (images shown as placeholders)."
    )
    error: str | None = None


def view_from_row(row: JobRow, rating: Rating | None = None) -> JobView:
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
        run_count=row.runs,
        stars=rating.stars if rating else None,
        favourite=rating.favourite if rating else False,
        rating_note=rating.note if rating else None,
    )


def run_views(runs: list[RunRow]) -> list[RunView]:
    """The job's runs as views, each naming the run of the same job it re-runs."""
    numbers = {r.flow_run_id: r.run_number for r in runs}
    return [
        RunView(
            number=r.run_number,
            flow_run_id=r.flow_run_id,
            status=r.status,
            created_at=r.created_at,
            queued_at=r.queued_at,
            started_at=r.started_at,
            completed_at=r.completed_at,
            duration_s=r.duration_s,
            worker=r.worker,
            priority=r.priority,
            attempts=r.attempts,
            reason=r.reason,
            parent_flow_run_id=r.parent_flow_run_id,
            parent_run=numbers.get(r.parent_flow_run_id or ""),
            parent_job_id=r.parent_job_id,
            outputs=list(r.outputs),
            error=r.error,
        )
        for r in runs
    ]


def run_transitions(transitions: list[Transition], run: RunView) -> list[Transition]:
    """The transitions of one run; the first run also owns the job's own (its submission)."""
    return [
        t
        for t in transitions
        if t.flow_run_id == run.flow_run_id or (t.flow_run_id is None and run.number == 1)
    ]


def _no_such_run(job_id: str, number: int, runs: list[RunView]) -> JobNotFound:
    error = JobNotFound(job_id)
    have = f"runs 1-{len(runs)}" if len(runs) > 1 else ("run 1" if runs else "no runs yet")
    error.args = (f"job {job_id} has no run {number} (it has {have})",)
    return error


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
                attempt=t.attempt,
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

    async def arefresh(self, job_id: str | None = None) -> bool:
        """Copy what changed in Prefect into the store first: ``job_id``'s runs, or everything
        new. False when no Prefect server could be asked (the store is as last synced)."""
        from stablenew.orchestration._prefect import prefect_client
        from stablenew.orchestration.services.exporter import sync, sync_job

        output_root = get_settings().resolved_output_root
        try:
            async with prefect_client() as client:
                if job_id is None:
                    await sync(client, self.store, output_root=output_root)
                else:
                    await sync_job(client, self.store, job_id, output_root=output_root)
        except (PrefectUnavailable, HistoryError) as e:
            logger.info("history not refreshed: %s", e)
            return False
        return True

    def refresh(self, job_id: str | None = None) -> bool:
        """:meth:`arefresh`, for a job id or any unique prefix of one (a prefix the store does
        not know yet gets a full incremental sync)."""
        full: str | None = None
        if job_id is not None:
            try:
                full = self.store.resolve_job_id(job_id)
            except AmbiguousJobId:
                raise
            except JobNotFound:
                full = None
            # Every run known and finished: nothing to ask Prefect (asking costs ~50 ms of
            # client set-up and a request per read). A run created since reaches the store
            # at the next list or export sync, or at once through `submit`/`run`/`rerun`.
            if full is not None and self._settled(full):
                return True
        return _run(self.arefresh(full))

    def _settled(self, job_id: str) -> bool:
        runs = self.store.runs_of(job_id)
        return bool(runs) and all(r.status.is_terminal for r in runs)

    def list_recent(self, *, limit: int = 50, offset: int = 0, **filters: Any) -> list[JobView]:
        args: FilterArgs = filters  # type: ignore[assignment]
        page = self.store.list_jobs(limit=limit, offset=offset, **args)
        rated = self.store.ratings(r.job_id for r in page.items)
        return [view_from_row(r, rated.get(r.job_id)) for r in page.items]

    def resolve_job_id(self, prefix: str) -> str:
        """The full id of the one recorded job ``prefix`` starts (or is); raises
        :class:`JobNotFound`, or :class:`AmbiguousJobId` listing a few candidates."""
        return self.store.resolve_job_id(prefix)

    def get(self, job_id: str, *, refresh: bool = True) -> JobDetail:
        """The job with this id (or the one recorded job whose id starts with it), with its
        runs; current unless ``refresh`` is False."""
        if refresh:
            self.refresh(job_id)
        row = self.store.get_job(self.resolve_job_id(job_id))
        view = view_from_row(row, self.store.rating(row.job_id))
        return JobDetail(**view.model_dump(), runs=run_views(self.store.runs_of(row.job_id)))

    def explain(self, job_id: str, run: int | None = None, *, refresh: bool = True) -> Explanation:
        """Everything known about one job; ``job_id`` may be a unique prefix. The timeline is
        of run number ``run`` (default: the latest); :class:`JobNotFound` if there is none.
        Current unless ``refresh`` is False."""
        if refresh:
            self.refresh(job_id)
        row = self.store.get_job(self.resolve_job_id(job_id))
        record = row.record()
        runs = run_views(self.store.runs_of(row.job_id))
        transitions = self.store.transitions(row.job_id)
        chosen: RunView | None = runs[-1] if runs else None
        if run is not None:
            chosen = next((r for r in runs if r.number == run), None)
            if chosen is None:
                raise _no_such_run(row.job_id, run, runs)
        return Explanation(
            job=view_from_row(row, self.store.rating(row.job_id)),
            record=record,
            provenance=provenance(record),
            run=chosen,
            runs=runs,
            timeline=timeline(
                run_transitions(transitions, chosen) if chosen is not None else transitions
            ),
            webui_requests=[
                {"path": path, "body": body} for path, body in describe_requests(record)
            ],
            error=chosen.error if chosen is not None else row.error,
        )

    # -- ratings ----------------------------------------------------------------------------

    def _known(self, job_id: str) -> str:
        """The full id of a job the store knows, syncing it from Prefect first."""
        self.refresh(job_id)
        return self.resolve_job_id(job_id)

    def rate(self, job_id: str, stars: int, *, note: str | None = None) -> Rating:
        """Give a job (any unique start of its id) 1..5 stars; its latest run is the one
        judged. Rating again replaces the stars (and the note, when one is given)."""
        return self.store.rate(self._known(job_id), stars, note=note)

    def favourite(self, job_id: str, on: bool | None = None) -> Rating:
        """Mark (``on=True``), unmark (False) or toggle (None) a job as a favourite."""
        return self.store.set_favourite(self._known(job_id), on)

    def learn(self, pack: str, *, min_ratings: int | None = None) -> LearnReport:
        """Per matrix slot and varied setting of ``pack``'s rated jobs: mean stars, counts and
        favourites of each value, best first (see :mod:`stablenew.history.learn`)."""
        rated = [(row.record(), rating) for row, rating in self.store.rated_jobs(pack)]
        if min_ratings is None:
            return learn(rated, pack=pack)
        return learn(rated, pack=pack, min_ratings=min_ratings)
