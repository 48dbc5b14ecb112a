"""Two routes the embedded Prefect server adds for a GPU worker: its next runs, claimed; and
a run started (RUNNING) when it gets the GPU, only while it is still the worker's claim.

    POST /stablenew/work_pools/{name}/claim
    body:   {"message": "Claimed by gpu-0", "labels": {"prefect.worker.name": "gpu-0", ...},
             "limit": 2, "work_queue_names": ["urgent"] (optional), "exclude": [ids]}
    answer: [{"work_pool_id", "work_queue_id", "flow_run"}] as ``get_scheduled_flow_runs``
            answers, each run already PENDING with ``message`` and carrying ``labels``

A Prefect worker takes a run in three requests: ``get_scheduled_flow_runs`` (which also
marks the pool's queues and deployments polled: writes), a proposed PENDING, and a PATCH of
the worker's labels. Here that cost ~40 ms of the server's CPU per job (``bench/floor.py``),
and workers asking at the same time are handed the same head of the queue: the loser's PENDING
is refused and its GPU waits for its next poll. This route does all three in ONE
transaction that takes the write lock first (SQLite: BEGIN IMMEDIATE; PostgreSQL: Prefect's
own query locks the runs it selects FOR UPDATE SKIP LOCKED, so a second worker gets the runs
after them), so two workers never get the same run.

Each run gets exactly what Prefect's own requests do: its query
(``models.workers.get_scheduled_flow_runs``: queue priority, then time; paused pools and queues
and concurrency limits respected), then a proposed PENDING decided by Prefect's own
orchestration (``models.flow_runs.set_flow_run_state`` with the server's flow policy, which
writes the state and emits its ``prefect.flow-run.Pending`` event; a run it does not accept is
skipped), then the labels merged into the run's as ``models.flow_runs.update_flow_run_labels``
merges them (that function commits on its own, so the write is made here). The queues and
deployments are marked polled as Prefect's route marks them, at most every
``READY_MARK_SECONDS`` per pool: well inside the 60 s after which Prefect shows them not ready.
``limit`` 0 claims nothing and only marks them.

    POST /stablenew/flow_runs/{id}/start
    body:   {"claim_message": "Claimed by gpu-0"}
    answer: the run (as ``GET /flow_runs/{id}``), RUNNING if it was PENDING with that message

A worker starts a staged run when it gets the GPU, so RUNNING says which run generates. Proposed
blind, RUNNING would be accepted for a run put back meanwhile and claimed by another worker (the
two would then both render it); read first, that is two requests per job. The start route reads
the run FOR UPDATE and proposes RUNNING through Prefect's orchestration in one transaction,
and answers the run as it then is (cancelled, or someone else's), for the worker to act on.

This module runs inside the server process only (see ``prefect_server``); against any other
Prefect server the routes are missing (404) and the worker claims with Prefect's requests, and
reads a run before it proposes RUNNING.
"""

from __future__ import annotations

import contextlib
import logging
import time
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import sqlalchemy as sa
from fastapi import Body, Depends, HTTPException, Path, status
from prefect.server import models, schemas
from prefect.server.api import dependencies
from prefect.server.database import PrefectDBInterface, provide_database_interface
from prefect.server.models.deployments import mark_deployments_ready
from prefect.server.models.work_queues import mark_work_queues_ready
from prefect.server.schemas.statuses import WorkQueueStatus
from prefect.server.utilities.server import PrefectRouter

from stablenew.orchestration.server.orchestration import FlowOrchestration, flow_orchestration

logger = logging.getLogger(__name__)

ROUTE = "/stablenew/work_pools/{name}/claim"
MAX_CLAIM = 32  # runs per request: the transaction holds SQLite's write lock meanwhile
READY_MARK_SECONDS = 5.0

router = PrefectRouter(prefix="/stablenew", tags=["StableNew"])
_marked: dict[UUID, float] = {}  # pool id -> when its queues were last marked polled

# Prefect's models take their database interface by injection, which mypy cannot follow.
_Call = Callable[..., Awaitable[Any]]
_read_work_pool_by_name = cast(_Call, models.workers.read_work_pool_by_name)
_read_work_queues = cast(_Call, models.workers.read_work_queues)
_get_scheduled_flow_runs = cast(_Call, models.workers.get_scheduled_flow_runs)
_read_flow_run = cast(_Call, models.flow_runs.read_flow_run)


@router.post("/work_pools/{name}/claim")
async def claim_flow_runs(
    docket: dependencies.Docket,
    work_pool_name: str = Path(..., alias="name"),
    message: str = Body(...),
    labels: dict[str, Any] = Body(default_factory=dict),
    limit: int = Body(1, ge=0, le=MAX_CLAIM),
    work_queue_names: list[str] | None = Body(None),
    exclude: list[UUID] = Body(default_factory=list),
    db: PrefectDBInterface = Depends(provide_database_interface),
    orchestration: FlowOrchestration = Depends(flow_orchestration),
) -> list[schemas.responses.WorkerFlowRunResponse]:
    claimed: list[schemas.responses.WorkerFlowRunResponse] = []
    skip = set(exclude)
    async with db.session_context(begin_transaction=True, with_for_update=True) as session:
        pool = await _read_work_pool_by_name(session=session, work_pool_name=work_pool_name)
        if pool is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"Work pool {work_pool_name!r} not found."
            )
        pool_id = pool.id
        mark = _marking_due(pool_id)
        polled: list[tuple[UUID, WorkQueueStatus]] = []
        if mark or work_queue_names:  # else the queues are not needed (two statements)
            queues = list(await _read_work_queues(session=session, work_pool_id=pool_id))
            if work_queue_names:
                unknown = set(work_queue_names) - {q.name for q in queues}
                if unknown:
                    raise HTTPException(
                        status.HTTP_404_NOT_FOUND,
                        f"Work pool queue(s) {sorted(unknown)} of {work_pool_name!r} not found.",
                    )
                queues = [q for q in queues if q.name in work_queue_names]
            polled = [(q.id, q.status) for q in queues]
        # The caller's own runs (``exclude``: put back while it still holds them) are
        # rarely among the runs due: asked for past them only when they took places. Asking
        # for limit + len(exclude) every time loaded and converted that many runs with their
        # records (~2 ms of server CPU each) to claim one.
        tried = set(skip)
        fetch = limit
        while fetch:
            candidates = await _get_scheduled_flow_runs(
                session=session,
                work_pool_ids=[pool_id],
                work_queue_ids=[queue_id for queue_id, _ in polled] if work_queue_names else None,
                scheduled_before=datetime.now(UTC),
                limit=fetch,
            )
            passed = 0
            for candidate in candidates:
                if len(claimed) == limit:
                    break
                run = candidate.flow_run
                if run.id in tried:
                    passed += 1
                    continue
                tried.add(run.id)
                result = await orchestration.propose(
                    session,
                    run.id,
                    schemas.states.State(type=schemas.states.StateType.PENDING, message=message),
                )
                state = result.state
                if result.status != schemas.responses.SetStateStatus.ACCEPT or state is None:
                    passed += 1  # not claimable after all (a concurrency limit): left as it is
                    continue
                merged = {**(run.labels or {}), **labels}
                if labels:
                    # As models.flow_runs.update_flow_run_labels writes them, in this
                    # transaction (that function commits its own).
                    await session.execute(
                        sa.update(db.FlowRun).where(db.FlowRun.id == run.id).values(labels=merged)
                    )
                claimed.append(
                    candidate.model_copy(
                        update={
                            "flow_run": run.model_copy(
                                update={
                                    "state": state,
                                    "state_id": state.id,
                                    "state_type": state.type,
                                    "state_name": state.name,
                                    "labels": merged,
                                }
                            )
                        }
                    )
                )
            if len(claimed) == limit or not passed or len(candidates) < fetch:
                break
            fetch = limit + len(tried)  # once more, past those
    if mark:
        await _mark_polled(docket, pool_id, polled)
    return claimed


def _marking_due(pool_id: UUID) -> bool:
    """Whether this ask marks the pool's queues and deployments polled: at most every
    READY_MARK_SECONDS per pool (taken now, so concurrent asks do not all mark)."""
    now = time.monotonic()
    if now - _marked.get(pool_id, -READY_MARK_SECONDS) < READY_MARK_SECONDS:
        return False
    _marked[pool_id] = now
    return True


@contextlib.contextmanager
def _holding_loaded(session: Any, model: type) -> Iterator[list[Any]]:
    """The ``model`` objects ``session`` loads meanwhile, held: its identity map keeps
    objects only while something references them."""
    loaded: list[Any] = []

    def keep(_: Any, instance: Any) -> None:
        if isinstance(instance, model):
            loaded.append(instance)

    sync_session = session.sync_session
    sa.event.listen(sync_session, "loaded_as_persistent", keep)
    try:
        yield loaded
    finally:
        sa.event.remove(sync_session, "loaded_as_persistent", keep)


async def _mark_polled(
    docket: Any, pool_id: UUID, queues: list[tuple[UUID, WorkQueueStatus]]
) -> None:
    """What Prefect's ``get_scheduled_flow_runs`` route schedules after every ask (two
    writes)."""
    try:
        await docket.add(mark_work_queues_ready, key=f"mark_work_queues_ready:work_pool:{pool_id}")(
            polled_work_queue_ids=[i for i, s in queues if s != WorkQueueStatus.NOT_READY],
            ready_work_queue_ids=[i for i, s in queues if s == WorkQueueStatus.NOT_READY],
        )
        await docket.add(mark_deployments_ready, key=f"mark_deployments_ready:work_pool:{pool_id}")(
            work_queue_ids=[i for i, _ in queues],
        )
    except Exception:  # the claims stand; the next call marks them
        _marked.pop(pool_id, None)
        logger.exception("could not mark the queues of work pool %s polled", pool_id)


@router.post("/flow_runs/{id:uuid}/start")
async def start_flow_run(
    flow_run_id: UUID = Path(..., alias="id"),
    claim_message: str = Body(..., embed=True),
    db: PrefectDBInterface = Depends(provide_database_interface),
    orchestration: FlowOrchestration = Depends(flow_orchestration),
) -> schemas.responses.FlowRunResponse:
    """Propose RUNNING for a run only if it is still PENDING with ``claim_message`` (the
    caller's claim), in one transaction: the check a worker would read first and the write
    it would then make. Answers the run as it is afterwards, so the caller sees why a start
    did not happen (cancelled meanwhile, or put back and claimed by another worker)."""
    async with db.session_context(begin_transaction=True, with_for_update=True) as session:
        # The check reads two columns, not the run with its state, queue and pool (four
        # statements), which set_flow_run_state reads anyway.
        current = (
            await session.execute(
                sa.select(db.FlowRun.state_type, db.FlowRunState.message)
                .outerjoin(db.FlowRunState, db.FlowRunState.id == db.FlowRun.state_id)
                .where(db.FlowRun.id == flow_run_id)
                .with_for_update(of=db.FlowRun)
            )
        ).first()
        if current is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Flow run not found")
        if tuple(current) == (schemas.states.StateType.PENDING, claim_message):
            with _holding_loaded(session, db.FlowRun) as loaded:
                await orchestration.propose(
                    session,
                    flow_run_id,
                    schemas.states.State(type=schemas.states.StateType.RUNNING),
                )
            # Answered from the run set_flow_run_state loaded and gave its new state, not
            # read again with its state, queue and pool (four statements); a column its
            # write left for the database to compute would be read alone.
            run = next((r for r in loaded if r.id == flow_run_id), None)
            if run is not None and (expired := sa.inspect(run).expired_attributes):
                await session.refresh(run, attribute_names=list(expired))
        else:
            run = None
        if run is None:
            run = await _read_flow_run(session=session, flow_run_id=flow_run_id)
        return schemas.responses.FlowRunResponse.model_validate(run, from_attributes=True)
