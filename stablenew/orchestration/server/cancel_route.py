"""A bulk cancel route that the embedded Prefect server adds.

    POST /stablenew/flow_runs/cancel
    body:   {"work_pool_name": "stablenew-gpu", "tags": ["pack:P"], "message": "..."}
            (or {"flow_run_ids": [...]} to cancel those runs; the filters combine)
    answer: [{"flow_run": {id, name, flow_id, idempotency_key, tags, work_queue_name,
              created, expected_start_time, state}, "status": "ACCEPT" | "REJECT" | "ABORT"}]

Cancelling a run one request at a time costs two round trips each and, with workers
consuming the pack, races them run by run (300 runs took 59 s; with 4 workers 126 s, and
the workers had finished 99 of 100 before the walk reached them). This route cancels every
active run the filters select in ONE transaction, which takes the write lock first (SQLite:
BEGIN IMMEDIATE; PostgreSQL: each run is read again FOR UPDATE, as Prefect's own route
does), so no worker's claim is lost between the read and the write.

Each run gets exactly what Prefect's ``POST /flow_runs/{id}/set_state`` does with a proposed
CANCELLING (not forced): Prefect's own orchestration (``models.flow_runs.set_flow_run_state``
with the server's flow policy) decides on the run as it is inside the transaction, writes the
state and emits the ``prefect.flow-run.*`` state-change event. So:

- SCHEDULED (or PAUSED, suspended) without infrastructure: CANCELLED at once. A worker that
  read it just before can no longer claim it: Prefect aborts CANCELLED -> PENDING.
- PENDING (claimed, not started) and RUNNING: CANCELLING. The engine's RUNNING is refused
  for a CANCELLING run, so a claimed run never starts; a running one is interrupted by the
  worker's cancel watch, which ends it CANCELLED.

A claimed run is never forced CANCELLED: Prefect accepts CANCELLED -> RUNNING, so a worker
that had claimed it would start it anyway (tests/orchestration/test_cancel_pack.py checks
both rules against the installed Prefect). After the commit the CANCELLING timeout check is
scheduled for each run, as Prefect's route does.

This module runs inside the server process only (see ``prefect_server``); against any other
Prefect server the route is missing (404) and ``JobService`` cancels run by run instead.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from typing import Any, cast
from uuid import UUID

from fastapi import Body, Depends, HTTPException, Request, status
from prefect.server import models, schemas
from prefect.server.database import PrefectDBInterface, provide_database_interface
from prefect.server.services.cancellation_cleanup import (
    maybe_schedule_cancelling_timeout_check_for_state,
)
from prefect.server.utilities.server import PrefectRouter

from stablenew.orchestration.server.orchestration import FlowOrchestration, flow_orchestration

logger = logging.getLogger(__name__)

LIMIT = 5000  # runs per request: one transaction holds SQLite's write lock for its duration
ROUTE = "/stablenew/flow_runs/cancel"

router = PrefectRouter(prefix="/stablenew", tags=["StableNew"])

ACTIVE = [
    schemas.states.StateType.SCHEDULED,
    schemas.states.StateType.PENDING,
    schemas.states.StateType.PAUSED,
    schemas.states.StateType.RUNNING,
]
# What a cancel answer carries of each run: enough for a caller to show the job, without
# its parameters (a whole record per run).
_RUN_FIELDS = (
    "id",
    "name",
    "flow_id",
    "deployment_id",
    "idempotency_key",
    "tags",
    "work_queue_name",
    "created",
    "expected_start_time",
)

_Read = Callable[..., Awaitable[Any]]
_read_flow_runs = cast(_Read, models.flow_runs.read_flow_runs)


@router.post("/flow_runs/cancel")
async def cancel_flow_runs(
    request: Request,
    work_pool_name: str | None = Body(None),
    tags: list[str] = Body(default_factory=list),
    flow_run_ids: list[UUID] | None = Body(None),
    message: str = Body("cancel requested"),
    db: PrefectDBInterface = Depends(provide_database_interface),
    orchestration: FlowOrchestration = Depends(flow_orchestration),
) -> list[dict[str, Any]]:
    if not tags and not flow_run_ids and not work_pool_name:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, "give work_pool_name, tags or flow_run_ids"
        )
    if flow_run_ids is not None and len(flow_run_ids) > LIMIT:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"Cannot cancel more than {LIMIT} flow runs at once."
        )
    run_filter = schemas.filters.FlowRunFilter(
        state=schemas.filters.FlowRunFilterState(
            type=schemas.filters.FlowRunFilterStateType(any_=ACTIVE)
        ),
        tags=schemas.filters.FlowRunFilterTags(all_=tags) if tags else None,
        id=schemas.filters.FlowRunFilterId(any_=flow_run_ids) if flow_run_ids else None,
    )
    pool_filter = (
        schemas.filters.WorkPoolFilter(
            name=schemas.filters.WorkPoolFilterName(any_=[work_pool_name])
        )
        if work_pool_name
        else None
    )
    answers: list[dict[str, Any]] = []
    cancelling: list[tuple[UUID, schemas.states.State]] = []
    # BEGIN IMMEDIATE on SQLite: the write lock first, so the selection below is what the
    # writes act on; no worker's claim lands in between.
    async with db.session_context(begin_transaction=True, with_for_update=True) as session:
        runs = await _read_flow_runs(
            session=session,
            flow_run_filter=run_filter,
            work_pool_filter=pool_filter,
            sort=schemas.sorting.FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=LIMIT,
        )
        # Decide on each run as it is now, not as the read above found it: on PostgreSQL
        # that read takes no lock, and set_flow_run_state's FOR UPDATE re-read would hand
        # back these very (possibly stale) objects from the session, so a worker's claim
        # committed in between would be overwritten with CANCELLED (and then run).
        for run in runs:
            session.expunge(run)
        for run in runs:
            result = await orchestration.propose(
                # A new state (and state id) per run, as each set_state request makes.
                session,
                run.id,
                schemas.states.State(type=schemas.states.StateType.CANCELLING, message=message),
            )
            state = result.state
            if state is not None and state.type == schemas.states.StateType.CANCELLING:
                cancelling.append((run.id, state))
            answers.append(
                {
                    "flow_run": {
                        **{name: getattr(run, name) for name in _RUN_FIELDS},
                        "state": state.model_dump(mode="json") if state else None,
                    },
                    "status": result.status.value,
                }
            )
    docket = getattr(request.app.state, "docket", None)
    if docket is not None:
        for run_id, state in cancelling:
            try:
                await maybe_schedule_cancelling_timeout_check_for_state(
                    docket=docket, flow_run_id=run_id, state=state
                )
            except Exception:  # as Prefect's route: the transition stands
                logger.exception("could not schedule the CANCELLING timeout check of %s", run_id)
    return answers
