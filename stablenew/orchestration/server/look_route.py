"""A route the embedded Prefect server adds for a GPU worker with runs in flight: what it
polls for, in one read.

    POST /stablenew/work_pools/{name}/look
    body:   {"flow_run_ids": [ids of the runs the worker has in flight]}
    answer: {"is_paused": false,
             "due": {"urgent": 0, "normal": 12, ...},
             "changed": [runs of flow_run_ids neither PENDING nor RUNNING, as /flow_runs/filter]}

While it has runs in flight a worker polls three things: its runs' states (a cancel, or a
run taken from it), twice a second; the runs due in the queues that outrank what it has
staged (a priority jump), twice a second; the pool's pause flag, once a second. Each is a
request of ~3-4 ms of the server's CPU here (``/flow_runs/filter``, ``/flow_runs/count``,
``GET /work_pools/{name}``), most of it the request itself rather than its query. This route
answers the three at once, read-only, each as Prefect's own request answers it:

- ``is_paused``: the pool's flag;
- ``due``: per queue of the pool, the runs SCHEDULED whose next scheduled start is now or
  earlier (what ``/flow_runs/count`` counts with those filters); every queue is named;
- ``changed``: Prefect's ``models.flow_runs.read_flow_runs`` with the id and state filters
  the worker's own filter request sends.

Against any other Prefect server the route is missing (404) and the worker polls with
Prefect's requests.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any, cast
from uuid import UUID

import sqlalchemy as sa
from fastapi import Body, Depends, HTTPException, Path, status
from prefect.server import models, schemas
from prefect.server.database import PrefectDBInterface, provide_database_interface
from prefect.server.utilities.server import PrefectRouter
from pydantic import BaseModel

MAX_RUNS = 200  # far more than a worker holds (its lookahead and the run it writes)

router = PrefectRouter(prefix="/stablenew", tags=["StableNew"])


class PoolLook(BaseModel):
    is_paused: bool
    due: dict[str, int]
    changed: list[schemas.responses.FlowRunResponse]


@router.post("/work_pools/{name}/look")
async def look(
    work_pool_name: str = Path(..., alias="name"),
    flow_run_ids: list[UUID] = Body(default_factory=list, embed=True, max_length=MAX_RUNS),
    db: PrefectDBInterface = Depends(provide_database_interface),
) -> PoolLook:
    async with db.session_context() as session:
        pool = (
            await session.execute(
                sa.select(db.WorkPool.id, db.WorkPool.is_paused).where(
                    db.WorkPool.name == work_pool_name
                )
            )
        ).first()
        if pool is None:
            raise HTTPException(
                status.HTTP_404_NOT_FOUND, f"Work pool {work_pool_name!r} not found."
            )
        due = await session.execute(
            sa.select(db.WorkQueue.name, sa.func.count(db.FlowRun.id))
            .select_from(db.WorkQueue)
            .outerjoin(
                db.FlowRun,
                sa.and_(
                    db.FlowRun.work_queue_id == db.WorkQueue.id,
                    db.FlowRun.state_type == schemas.states.StateType.SCHEDULED,
                    db.FlowRun.next_scheduled_start_time <= datetime.now(UTC),
                ),
            )
            .where(db.WorkQueue.work_pool_id == pool.id)
            .group_by(db.WorkQueue.name)
        )
        changed: list[Any] = []
        if flow_run_ids:
            changed = list(
                await cast(Any, models.flow_runs.read_flow_runs)(
                    session=session,
                    flow_run_filter=schemas.filters.FlowRunFilter(
                        id=schemas.filters.FlowRunFilterId(any_=flow_run_ids),
                        state=schemas.filters.FlowRunFilterState(
                            type=schemas.filters.FlowRunFilterStateType(
                                not_any_=[
                                    schemas.states.StateType.PENDING,
                                    schemas.states.StateType.RUNNING,
                                ]
                            )
                        ),
                    ),
                )
            )
        return PoolLook(
            is_paused=bool(pool.is_paused),
            due={name: count for name, count in due.all()},
            changed=[
                schemas.responses.FlowRunResponse.model_validate(run, from_attributes=True)
                for run in changed
            ],
        )
