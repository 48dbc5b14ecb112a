"""Recovering the runs of a worker that died: a claim is a promise the fleet keeps.

A GPU worker claims runs ahead of the GPU (its lookahead): they are PENDING while they wait
for the GPU, and a run turns RUNNING when it gets the GPU (it generates, then writes what it
made). When the worker dies (SIGKILL, power, OOM killer) nothing in Prefect finishes those
runs. Here another worker of the pool puts them right:

- runs the dead worker had claimed but not started (PENDING) go back to their queue at their
  original place (a SCHEDULED state at their expected start: priority and FIFO kept);
- a run it had started (RUNNING) is marked CRASHED with the reason and, unless it has used up
  ``retries_on_crash``, run again as a new run of the same job (lineage ``recovery``) at the
  original place;
- a run the user was cancelling ends CANCELLED.

Where it runs, and why there: in the workers themselves (the live worker first by name is the
one that acts). Runs only need recovering when some worker can run them again, the user's own
Prefect server may be a stock one (no extension of ours there), and Prefect's own answer (a
heartbeat event per run and an automation) costs a thread, events and writes per job while
being unable to put a run back at its place in the queue.

Who claimed what: a worker's PENDING state says ``Claimed by <worker>`` (written in the same
request that wins the claim), and a RUNNING run carries Prefect's ``prefect.worker.name``
label, written before the run starts (a run whose label could not be written is handed back
rather than run). Liveness is Prefect's worker heartbeat or, where heartbeats did not land,
the worker's last GPU hand-over (the latest RUNNING of the runs it holds); both are server
times, judged against
the scanning worker's own heartbeat, so clocks of different machines never matter. A worker
judged dead that was alive after all lets go of what was taken from it (see ``cancel_watch``).

Two parties never re-run a job twice: the re-run's idempotency key is derived from the crashed
run's, so a second attempt gets the same run back; and every run is read again just before it
is changed.
"""

from __future__ import annotations

import logging
from collections.abc import Iterable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType, Worker
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Crashed, Scheduled

from stablenew.orchestration.services import tags
from stablenew.orchestration.services.submission import (
    LINEAGE_KEY,
    MAX_RESUBMITS,
    Lineage,
    run_tags,
)
from stablenew.records import NormalizedJobRecord

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

CLAIM_PREFIX = "Claimed by "
WORKER_LABEL = "prefect.worker.name"
_ACTIVE = [StateType.PENDING, StateType.RUNNING, StateType.CANCELLING]
_PAGE = 200


def claim_message(worker: str) -> str:
    return f"{CLAIM_PREFIX}{worker}"


def claimant(run: FlowRun) -> str | None:
    """The worker that holds ``run`` now, or ``None`` if no worker of ours does."""
    state = run.state
    if state is None:
        return None
    if state.type == StateType.PENDING:
        message = state.message or ""
        return message[len(CLAIM_PREFIX) :] if message.startswith(CLAIM_PREFIX) else None
    if state.type in (StateType.RUNNING, StateType.CANCELLING):
        name = (run.labels or {}).get(WORKER_LABEL)
        return str(name) if name else None
    return None


@dataclass(frozen=True)
class Liveness:
    """Which workers of a pool are alive, as the scanning worker sees them."""

    alive: frozenset[str]
    last_seen: dict[str, datetime] = field(default_factory=dict)
    # The scanner's own last heartbeat (server time) and how far back "alive" reaches.
    reference: datetime | None = None
    window: timedelta = timedelta(seconds=30)

    def is_dead(self, worker: str) -> bool:
        return worker not in self.alive

    def recent(self, at: datetime | None) -> bool:
        """Whether a server timestamp ``at`` is as recent as a live worker's heartbeat."""
        return at is not None and self.reference is not None and self.reference - at <= self.window

    @property
    def leader(self) -> str | None:
        """The live worker that recovers (first by name): one party acts at a time."""
        return min(self.alive) if self.alive else None


def judge(workers: Iterable[Worker], me: str, dead_after: float) -> Liveness:
    """Alive: ``me``, and every worker whose last heartbeat is within ``dead_after`` seconds of
    the freshest one (the scanner's own is at most one heartbeat interval old)."""
    seen = {w.name: w.last_heartbeat_time for w in workers if w.last_heartbeat_time is not None}
    reference = seen.get(me) or max(seen.values(), default=None)
    limit = timedelta(seconds=dead_after)
    alive = {me}
    if reference is not None:
        alive |= {name for name, at in seen.items() if reference - at <= limit}
    return Liveness(frozenset(alive), seen, reference, limit)


@dataclass
class Recovered:
    requeued: list[UUID] = field(default_factory=list)
    crashed: list[UUID] = field(default_factory=list)
    rerun: list[UUID] = field(default_factory=list)
    cancelled: list[UUID] = field(default_factory=list)

    def __bool__(self) -> bool:
        return bool(self.requeued or self.crashed or self.cancelled)


async def read_liveness(client: PrefectClient, pool: str, me: str, dead_after: float) -> Liveness:
    try:
        workers = await client.read_workers_for_work_pool(pool)
    except httpx.HTTPStatusError as e:
        if e.response.status_code == 404:
            return Liveness(frozenset({me}))
        raise
    return judge(workers, me, dead_after)


async def scan(
    client: PrefectClient,
    pool: str,
    me: str,
    *,
    dead_after: float,
    retries_on_crash: int,
    logger: Logger,
) -> None:
    """Recover the runs of the pool's dead workers, if ``me`` is its first live worker.

    A worker counts as dead when neither its heartbeat nor its last GPU hand-over (a run it
    started) is within ``dead_after``: Prefect's worker channel drops heartbeats when the
    server's database is busy (SQLite "database is locked"), and a worker that keeps
    rendering is not dead."""
    live = await read_liveness(client, pool, me, dead_after)
    if live.leader != me:
        return
    runs = await active_runs(client, pool)
    holders = {claimant(r) for r in runs} - {None}
    for worker in sorted(w for w in holders if w and live.is_dead(w)):
        if live.recent(last_start(runs, worker)):
            logger.info("%s misses heartbeats but still hands out its GPU: left alone", worker)
            continue
        seen = live.last_seen.get(worker)
        why = (
            f"stopped heartbeating (last at {seen:%H:%M:%S} UTC)"
            if seen
            else "is not known to the pool"
        )
        await recover_worker(
            client, worker, runs, why=why, retries_on_crash=retries_on_crash, logger=logger
        )


def last_start(runs: Iterable[FlowRun], worker: str) -> datetime | None:
    """When ``worker`` last gave its GPU to a run (server time): its latest RUNNING."""
    return max(
        (
            r.state.timestamp
            for r in runs
            if r.state is not None and r.state.type == StateType.RUNNING and claimant(r) == worker
        ),
        default=None,
    )


async def active_runs(client: PrefectClient, pool: str) -> list[FlowRun]:
    """PENDING, RUNNING and CANCELLING runs of the pool (what a worker can hold)."""
    runs: list[FlowRun] = []
    while True:
        page = await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=_ACTIVE))
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            sort=FlowRunSort.ID_DESC,
            limit=_PAGE,
            offset=len(runs),
        )
        runs.extend(page)
        if len(page) < _PAGE:
            return runs


async def requeue(client: PrefectClient, run: FlowRun, reason: str) -> None:
    """Back to its queue at its original place (its expected start keeps FIFO and the queue
    its priority); the next worker that claims it runs it as the run's next attempt."""
    when = run.expected_start_time or run.created or datetime.now(UTC)
    await client.set_flow_run_state(
        run.id, Scheduled(scheduled_time=when, message=reason), force=True
    )
    if tags.REQUEUED not in (run.tags or []):
        # Tells the history to read this run's states (its timestamps do not show this).
        await client.update_flow_run(run.id, tags=[*(run.tags or []), tags.REQUEUED])


async def recover_worker(
    client: PrefectClient,
    worker: str,
    runs: Iterable[FlowRun],
    *,
    why: str,
    retries_on_crash: int,
    logger: Logger,
) -> Recovered:
    """Put right every run in ``runs`` that ``worker`` holds (see the module doc)."""
    mine = [r for r in runs if claimant(r) == worker]
    done = Recovered()
    if not mine:
        return done
    for stale in mine:
        run = await _reread(client, stale.id)
        if run is None or claimant(run) != worker or run.state is None:
            continue  # finished, cancelled or recovered by someone else meanwhile
        kind = run.state.type
        if kind == StateType.CANCELLING:
            await client.set_flow_run_state(
                run.id, Cancelled(message=f"cancelled: {worker} {why}"), force=True
            )
            done.cancelled.append(run.id)
        elif kind == StateType.RUNNING:
            rerun = await _crash_and_rerun(client, run, worker, why, retries_on_crash)
            done.crashed.append(run.id)
            if rerun is not None:
                done.rerun.append(rerun)
        else:
            await requeue(client, run, f"Requeued: {worker} {why} before the run reached the GPU")
            done.requeued.append(run.id)
    if done:
        logger.warning(
            "Recovered the runs of %s (%s): %d requeued, %d crashed (%d re-run), %d cancelled",
            worker, why, len(done.requeued), len(done.crashed), len(done.rerun),
            len(done.cancelled),
        )  # fmt: skip
    return done


async def _reread(client: PrefectClient, run_id: UUID) -> FlowRun | None:
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=[run_id])), limit=1
    )
    return runs[0] if runs else None


async def _crash_and_rerun(
    client: PrefectClient, run: FlowRun, worker: str, why: str, retries_on_crash: int
) -> UUID | None:
    """Mark the generating run CRASHED and queue the job again once (bounded by
    ``retries_on_crash`` counted along the recovery lineage); the new run's id or None."""
    used = await _recoveries_before(client, run)
    record = _record_of(run)
    if record is None or used >= retries_on_crash:
        because = (
            "no valid record to run again"
            if record is None
            else f"retries_on_crash ({retries_on_crash}) used up"
        )
        await client.set_flow_run_state(
            run.id,
            Crashed(message=f"{worker} {why} while generating; not re-run: {because}"),
            force=True,
        )
        return None
    rerun = await _create_rerun(client, run, record)
    await client.set_flow_run_state(
        run.id,
        Crashed(message=f"{worker} {why} while generating; re-run as {rerun}"),
        force=True,
    )
    return rerun


async def _recoveries_before(client: PrefectClient, run: FlowRun) -> int:
    """How many times this job was already re-run after a crash, up to ``run``."""
    count = 0
    current: FlowRun | None = run
    while current is not None and count < 100:
        lineage = Lineage.of(current)
        if lineage.reason != "recovery" or not lineage.parent_flow_run_id:
            return count
        count += 1
        try:
            current = await client.read_flow_run(UUID(lineage.parent_flow_run_id))
        except (ObjectNotFound, ValueError):
            return count
    return count


def _record_of(run: FlowRun) -> NormalizedJobRecord | None:
    try:
        return NormalizedJobRecord.model_validate((run.parameters or {})["record"])
    except (KeyError, ValueError):
        return None


def rerun_key(key: str | None, job_id: str) -> str:
    """The idempotency key of the recovery run of a run keyed ``key``: the next ``~N`` of
    the same job, the same for every party that recovers it."""
    base, sep, n = (key or job_id).rpartition("~")
    if sep and base == job_id and n.isdigit():
        return f"{job_id}~{int(n) + 1}"
    return f"{job_id}~1"


async def _create_rerun(client: PrefectClient, run: FlowRun, record: NormalizedJobRecord) -> UUID:
    if run.deployment_id is None:
        raise ValueError(f"flow run {run.id} has no deployment to run it again from")
    lineage = Lineage("recovery", parent_flow_run_id=str(run.id))
    queue = run.work_queue_name or "normal"
    key = run.idempotency_key
    for _ in range(MAX_RESUBMITS):
        key = rerun_key(key, record.job_id)
        created = await client.create_flow_run_from_deployment(
            run.deployment_id,
            parameters={"record": record.model_dump(mode="json")},
            context={LINEAGE_KEY: lineage.context()},
            state=Scheduled(scheduled_time=run.expected_start_time or run.created),
            name=record.run_name,
            tags=run_tags(record, queue, lineage),
            idempotency_key=key,
            work_queue_name=queue,
        )
        # A taken key answers with the run that holds it: ours if another party recovered
        # this run first, else a re-submission of the job; then the next key.
        if Lineage.of(created).parent_flow_run_id == str(run.id):
            return created.id
    raise ValueError(f"job {record.job_id} was re-submitted more than {MAX_RESUBMITS} times")
