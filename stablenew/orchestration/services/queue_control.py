"""Moving and editing a queued job: a new run first, then the old one cancelled.

A Prefect flow run's work queue is fixed when it is created, so a job changes place (another
priority, the front of its queue, after another job) or settings (an edited record, a new job
with the old one as parent) by getting a new run; the old run is cancelled only once the new
one exists, so at every moment at least one run of the job is queued and nothing is lost.

Never twice: workers claim ahead (a staged run is PENDING or RUNNING, waiting for its GPU), so
the old run may be claimed at any point. The order is:

1. The old run must be queued (SCHEDULED or PAUSED), else :class:`JobNotQueued`, nothing made.
2. A reserve run of the new record is created (lineage ``reserve``), parked a week ahead:
   workers only claim runs that are due, so none can take it, and the job now has a run
   whatever happens next.
3. The old run is read again and, still queued, asked to cancel (CANCELLING, which the server
   turns into CANCELLED at once for a run still SCHEDULED). Claimed meanwhile (neither
   CANCELLED nor CANCELLING): it runs as it was, the reserve is dropped, and the result says
   the job is already running. Landed as CANCELLING (a worker claimed it between the read and
   the cancel): its worker stops it, and the job goes on as below.
4. With the old run stopped, the new run is created in its real place (lineage ``move`` or
   ``edit``, parent = the old run) and the reserve is cancelled and deleted (it never ran;
   left behind it would be the job's latest run). (The reserve cannot simply be
   released: Prefect keeps a run's first scheduled time as its expected start, which the
   queue view and the GPU's order go by.)

An error midway drops the reserve, or, when the old run is stopping and no new run exists,
releases it into the job's place. A process killed between 2 and 4 leaves the reserve a week
ahead beside the old run (shown at the end of the queue); cancel it by its flow run id.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelling, Scheduled
from pydantic import BaseModel, Field

from stablenew.errors import JobNotQueued, SubmissionError
from stablenew.orchestration.services.pool import DEFAULT_PRIORITY, check_priority
from stablenew.orchestration.services.record_edit import edit_record
from stablenew.orchestration.services.submission import Lineage
from stablenew.packs.model import Limits
from stablenew.records import NormalizedJobRecord

if TYPE_CHECKING:
    from stablenew.orchestration.services.jobs import JobService

logger = logging.getLogger(__name__)

QUEUED = (StateType.SCHEDULED, StateType.PAUSED)
_STOPPING = (StateType.CANCELLED, StateType.CANCELLING)
PARKED = timedelta(days=7)  # how far ahead a new run waits until the old one is cancelled
_STEP = timedelta(milliseconds=1)  # how far ahead of the first run "front" goes

# Called between creating the new run and cancelling the old one; tests claim the old run
# there to exercise the race.
Hook = Callable[[], Awaitable[None]]


class Replaced(BaseModel):
    """What a move or edit did."""

    job_id: str = Field(description="The job that holds the place now (a new id after an edit).")
    done: bool = Field(description="False: the job was claimed meanwhile and runs as it was.")
    flow_run_id: str = Field(description="The run that carries the job now.")
    old_flow_run_id: str
    new_flow_run_id: str = Field(description="The run created; empty when not done.")
    priority: str
    message: str


@dataclass(frozen=True)
class _Target:
    priority: str
    when: datetime


async def move(
    service: JobService,
    client: PrefectClient,
    job_id: str,
    *,
    priority: str | None = None,
    front: bool = False,
    after: str | None = None,
    between: Hook | None = None,
) -> Replaced:
    """Give a queued job another place: ``priority`` (the end of that queue), ``front`` (of
    its queue, or of ``priority``'s), or ``after`` another job (in that job's queue)."""
    if sum(bool(x) for x in (priority, front, after)) == 0:
        raise ValueError("move needs priority, front or after")
    if after and (priority or front):
        raise ValueError("after takes its queue from the other job; give it alone")
    old = await _queued_run(service, client, job_id)
    record = _record_of(old)
    if after:
        target = await _after(service, client, after, old)
    else:
        prio = check_priority(priority) if priority else _queue_of(old)
        when = await _front_of(service, client, prio, old) if front else datetime.now(UTC)
        target = _Target(prio, when)
    lineage = Lineage("move", parent_flow_run_id=str(old.id))
    return await _replace(service, client, old, record, target, lineage, between, allow=True)


async def edit(
    service: JobService,
    client: PrefectClient,
    job_id: str,
    changes: Mapping[str, Any],
    *,
    limits: Limits | None = None,
    between: Hook | None = None,
) -> Replaced:
    """Replace a queued job by its edited record (a new job id, the old job as parent) in the
    same place of the same queue."""
    old = await _queued_run(service, client, job_id)
    record = edit_record(_record_of(old), changes, limits=limits)
    target = _Target(_queue_of(old), _start(old) or datetime.now(UTC))
    lineage = Lineage("edit", parent_flow_run_id=str(old.id), parent_job_id=job_id)
    return await _replace(service, client, old, record, target, lineage, between, allow=False)


async def _queued_run(service: JobService, client: PrefectClient, job_id: str) -> FlowRun:
    run = await service._latest_run(client, job_id)
    if run.state_type not in QUEUED:
        raise JobNotQueued(job_id, _state_name(run))
    return run


def _state_name(run: FlowRun) -> str:
    if run.state_type in (StateType.PENDING, StateType.RUNNING):
        return "already running (claimed by a worker)"
    return str(run.state.name if run.state else "without state").lower()


def _record_of(run: FlowRun) -> NormalizedJobRecord:
    try:
        return NormalizedJobRecord.model_validate((run.parameters or {})["record"])
    except (KeyError, ValueError) as e:
        raise SubmissionError(f"flow run {run.id} holds no valid job record") from e


def _start(run: FlowRun) -> datetime | None:
    """Expected start as a plain UTC datetime (Prefect's pendulum type does not mix)."""
    when = run.expected_start_time
    if when is None:
        return None
    when = when.astimezone(UTC)
    return datetime(
        when.year, when.month, when.day, when.hour, when.minute, when.second,
        when.microsecond, tzinfo=UTC,
    )  # fmt: skip


def _job_of(run: FlowRun) -> str:
    return (run.idempotency_key or "").split("~", 1)[0]


def _queue_of(run: FlowRun) -> str:
    return run.work_queue_name or DEFAULT_PRIORITY


async def _front_of(
    service: JobService, client: PrefectClient, priority: str, moving: FlowRun
) -> datetime:
    """Just ahead of the first run waiting in ``priority``'s queue (now if none waits)."""
    waiting = [
        when
        for r in await service._pool_runs(client, [StateType.SCHEDULED])
        if r.work_queue_name == priority and r.id != moving.id and (when := _start(r))
    ]
    if not waiting:
        return datetime.now(UTC)
    return min(min(waiting) - _STEP, datetime.now(UTC))


async def _after(
    service: JobService, client: PrefectClient, other_id: str, moving: FlowRun
) -> _Target:
    """Between ``other_id``'s run and the next one in its queue; a claimed or running
    ``other_id`` puts the job at the front of that queue."""
    other = await service._latest_run(client, other_id)
    if other.id == moving.id:
        raise ValueError("a job cannot go after itself")
    prio = _queue_of(other)
    if other.state_type not in QUEUED:
        if other.state_type in (StateType.PENDING, StateType.RUNNING):
            return _Target(prio, await _front_of(service, client, prio, moving))
        raise JobNotQueued(other_id, _state_name(other))
    start = _start(other) or datetime.now(UTC)
    later = [
        when
        for r in await service._pool_runs(client, [StateType.SCHEDULED])
        if r.work_queue_name == prio
        and r.id not in (moving.id, other.id)
        and (when := _start(r))
        and when > start
    ]
    if not later:
        return _Target(prio, start + timedelta(microseconds=1))
    return _Target(prio, max(start + timedelta(microseconds=1), start + (min(later) - start) / 2))


async def _replace(
    service: JobService,
    client: PrefectClient,
    old: FlowRun,
    record: NormalizedJobRecord,
    target: _Target,
    lineage: Lineage,
    between: Hook | None,
    *,
    allow: bool,
) -> Replaced:
    old_job = _job_of(old)
    verb = "moved" if lineage.reason == "move" else "edited"

    async def create(when: datetime, why: Lineage, duplicates: bool) -> FlowRun:
        (run,) = await service.asubmit_runs(
            [record],
            target.priority,
            allow_duplicates=duplicates,
            group_models=False,
            lineage={record.job_id: why},
            scheduled_at=when,
        )
        return run

    def result(done: bool, run: FlowRun, message: str) -> Replaced:
        return Replaced(
            job_id=record.job_id if done else old_job,
            done=done,
            flow_run_id=str(run.id),
            old_flow_run_id=str(old.id),
            new_flow_run_id=str(run.id) if done else "",
            priority=target.priority if done else _queue_of(old),
            message=message,
        )

    reserve = Lineage("reserve", str(old.id), lineage.parent_job_id)
    parked = await create(datetime.now(UTC) + PARKED, reserve, allow)
    new: FlowRun | None = None
    try:
        if between is not None:
            await between()
        if (await client.read_flow_run(old.id)).state_type in QUEUED:
            # CANCELLING, never a forced CANCELLED: the server decides on the run as it is.
            await client.set_flow_run_state(
                old.id, Cancelling(message=f"{verb}: replaced (job {record.job_id})")
            )
        after = (await client.read_flow_run(old.id)).state_type
        if after not in _STOPPING:  # a worker claimed it first: it runs as it was
            await _drop(service, client, parked)
            return result(False, old, f"job {old_job} is already running; it was left as it was")
        new = await create(target.when, lineage, True)
        await _drop(service, client, parked)
    except BaseException:
        await _settle(service, client, old, parked, new, target)
        raise
    if after == StateType.CANCELLING:  # claimed between the re-read and the cancel
        return result(
            True,
            new,
            f"job {old_job} was being claimed; that run is stopped, run {new.id} replaces it",
        )
    return result(True, new, f"job {old_job} {verb}: run {new.id} in {target.priority}")


async def _drop(service: JobService, client: PrefectClient, parked: FlowRun) -> None:
    """Cancel the reserve (it never ran), then delete it: left behind, it would be the job's
    latest run, which ``status``, ``cancel`` and the history go by."""
    await service._cancel_run(client, parked)
    with contextlib.suppress(ObjectNotFound):
        await client.delete_flow_run(parked.id)


async def _settle(
    service: JobService,
    client: PrefectClient,
    old: FlowRun,
    parked: FlowRun,
    new: FlowRun | None,
    target: _Target,
) -> None:
    """After a failure midway, the parked run goes unless it alone still holds the job (the
    old one is being cancelled and no new one exists): then it is released to its place."""
    try:
        stopping = (await client.read_flow_run(old.id)).state_type in _STOPPING
        if stopping and new is None:
            await client.set_flow_run_state(
                parked.id, Scheduled(scheduled_time=target.when), force=True
            )
        else:
            await _drop(service, client, parked)
    except Exception:
        logger.exception("could not settle parked flow run %s of %s", parked.id, old.id)
