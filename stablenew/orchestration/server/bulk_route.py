"""A bulk flow-run creation route that the embedded Prefect server adds.

    POST /stablenew/deployments/{id}/create_flow_run/bulk   (body and answer as Prefect's own
    /deployments/{id}/create_flow_run/bulk)

Prefect's own bulk route creates each run through ``models.flow_runs.create_flow_run``:
about ten statements and a full orchestration pass per run, ~20 ms of server CPU each on
this machine, so a 1,000-job pack took over 20 s to accept. This route writes the same rows
(checked field by field against Prefect's route in the tests) with a few statements per
request: one multi-row INSERT of the runs, idempotent on ``(flow_id, idempotency_key)``
as Prefect's is, one read of which keys were already taken, one INSERT of the first states
and one UPDATE pointing the runs at them. What a forced first ``SCHEDULED`` state does in
Prefect's orchestration (run state fields, expected and next scheduled start, the state's
``flow_run_id``) is done here directly, and after the commit the same
``prefect.flow-run.Scheduled`` events are emitted, built by Prefect's own event code.

Only a first state of type SCHEDULED (or none, meaning Scheduled) is accepted; the client
never sends another. The whole request is one transaction, so a failure creates nothing.
This module runs inside the server process only (see ``prefect_server``).
"""

from __future__ import annotations

import json
import logging
from collections.abc import Awaitable, Callable, Sequence
from typing import Any, cast
from uuid import UUID

import sqlalchemy as sa
from fastapi import Body, Depends, HTTPException, Path, status
from prefect.server import models, schemas
from prefect.server.api import dependencies
from prefect.server.api.validation import validate_job_variables_for_deployment_flow_run
from prefect.server.api.workers import WorkerLookups
from prefect.server.database import PrefectDBInterface, provide_database_interface
from prefect.server.events.clients import PrefectServerEventsClient
from prefect.server.events.schemas.events import Event
from prefect.server.models import events as run_events
from prefect.server.schemas.actions import DeploymentFlowRunCreate
from prefect.server.schemas.responses import FlowRunBulkCreateResponse, FlowRunCreateResult
from prefect.server.utilities.server import PrefectRouter
from prefect.types._datetime import now
from prefect.utilities.schema_tools.hydration import HydrationContext, HydrationError, hydrate
from prefect.utilities.schema_tools.validation import ValidationError, validate

logger = logging.getLogger(__name__)

LIMIT = 1000  # runs per request: one transaction holds SQLite's write lock for its duration

router = PrefectRouter(prefix="/stablenew", tags=["StableNew"])

# Prefect's database-injected model functions do not type-check when called from outside.
_Read = Callable[..., Awaitable[Any]]
_read_deployment = cast(_Read, models.deployments.read_deployment)
_read_flow = cast(_Read, models.flows.read_flow)
_read_work_queue = cast(_Read, models.work_queues.read_work_queue)


@router.post("/deployments/{id:uuid}/create_flow_run/bulk")
async def bulk_create_flow_runs(
    flow_runs: list[DeploymentFlowRunCreate] = Body(...),
    deployment_id: UUID = Path(..., alias="id"),
    created_by: schemas.core.CreatedBy | None = Depends(dependencies.get_created_by),
    db: PrefectDBInterface = Depends(provide_database_interface),
    worker_lookups: WorkerLookups = Depends(WorkerLookups),
) -> FlowRunBulkCreateResponse:
    if len(flow_runs) > LIMIT:
        raise HTTPException(
            status.HTTP_400_BAD_REQUEST, f"Cannot create more than {LIMIT} flow runs at once."
        )
    for i, request in enumerate(flow_runs):
        if request.state is not None and request.state.type != schemas.states.StateType.SCHEDULED:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST,
                f"flow run #{i}: this route creates SCHEDULED runs only, "
                f"not {request.state.type.value}",
            )
    # BEGIN IMMEDIATE: take SQLite's write lock first, waiting (busy timeout) for another
    # writer such as the event persister, rather than failing at once with "database is
    # locked" when a read transaction cannot be upgraded (a 503 the client must retry).
    async with db.session_context(begin_transaction=True, with_for_update=True) as session:
        deployment = await _read_deployment(session=session, deployment_id=deployment_id)
        if not deployment:
            raise HTTPException(status.HTTP_404_NOT_FOUND, "Deployment not found")
        if not flow_runs:
            return FlowRunBulkCreateResponse(results=[])
        creation = _Creation(db, session, deployment, created_by, worker_lookups)
        results, created = await creation.run(flow_runs)
    try:
        await _emit_scheduled_events(db, deployment, created)
    except Exception:
        # The runs are committed; failing the request now would only make the client
        # send it again for runs that already exist.
        logger.exception("could not emit the Scheduled events of %d new flow runs", len(created))
    return FlowRunBulkCreateResponse(results=results)


class _Creation:
    """One request's runs, built as Prefect builds them and written in a few statements."""

    def __init__(
        self,
        db: PrefectDBInterface,
        session: Any,
        deployment: Any,
        created_by: schemas.core.CreatedBy | None,
        worker_lookups: WorkerLookups,
    ) -> None:
        self.db = db
        self.session = session
        self.deployment = deployment
        self.created_by = created_by
        self.worker_lookups = worker_lookups
        self.queue_ids: dict[str, UUID] = {}
        self.checked_job_variables: dict[str, str | None] = {}

    async def run(
        self, requests: Sequence[DeploymentFlowRunCreate]
    ) -> tuple[list[FlowRunCreateResult], list[schemas.core.FlowRun]]:
        try:
            hydration = await HydrationContext.build(
                session=self.session,
                raise_on_error=True,
                render_jinja=True,
                render_workspace_variables=True,
            )
        except HydrationError as exc:
            raise HTTPException(
                status.HTTP_400_BAD_REQUEST, f"Error building hydration context: {exc}"
            ) from exc
        results: list[FlowRunCreateResult] = []
        runs: list[schemas.core.FlowRun] = []
        for request in requests:
            try:
                run = await self._build(request, hydration)
            except _Refused as refused:
                results.append(FlowRunCreateResult(status="FAILED", error=str(refused)))
                continue
            runs.append(run)
            results.append(FlowRunCreateResult(flow_run_id=run.id, status="CREATED"))
        if not runs:
            return results, []
        existing = await self._insert_runs(runs)
        created = [run for run in runs if run.id not in existing]
        await self._insert_first_states(created)
        # A taken idempotency key answers with the run that holds it, as Prefect's route does.
        for result in results:
            if result.flow_run_id is not None:
                result.flow_run_id = existing.get(result.flow_run_id, result.flow_run_id)
        return results, created

    async def _build(
        self, request: DeploymentFlowRunCreate, hydration: HydrationContext
    ) -> schemas.core.FlowRun:
        deployment = self.deployment
        parameters = hydrate({**deployment.parameters, **(request.parameters or {})}, hydration)
        enforce = deployment.enforce_parameter_schema
        if request.enforce_parameter_schema is not None:
            enforce = request.enforce_parameter_schema
        if enforce:
            if not isinstance(deployment.parameter_openapi_schema, dict):
                raise _Refused(
                    "Parameter schema enforcement is enabled but deployment has no valid schema."
                )
            try:
                validate(parameters, deployment.parameter_openapi_schema, raise_on_error=True)
            except ValidationError as exc:
                raise _Refused(f"Parameter validation failed: {exc}") from exc
        await self._check_job_variables(request)
        queue_name = request.work_queue_name or deployment.work_queue_name
        run = schemas.core.FlowRun(
            **request.model_dump(
                exclude={
                    "parameters",
                    "tags",
                    "infrastructure_document_id",
                    "work_queue_name",
                    "enforce_parameter_schema",
                }
            ),
            flow_id=deployment.flow_id,
            deployment_id=deployment.id,
            deployment_version=deployment.version,
            parameters=parameters,
            tags=set(deployment.tags).union(request.tags),
            infrastructure_document_id=(
                request.infrastructure_document_id or deployment.infrastructure_document_id
            ),
            work_queue_name=queue_name,
            work_queue_id=await self._queue_id(request.work_queue_name),
            created_by=self.created_by,
        )
        run.labels = await models.deployments.with_system_labels_for_deployment_flow_run(
            session=self.session, deployment=deployment, user_supplied_labels=run.labels
        )
        if run.state is None:
            run.state = schemas.states.Scheduled()
        run.state.state_details.flow_run_id = run.id
        return run

    async def _queue_id(self, name: str | None) -> UUID | None:
        if not name:
            return cast(UUID | None, self.deployment.work_queue_id)
        if name not in self.queue_ids:
            queue = self.deployment.work_queue
            if queue is None or queue.work_pool is None:
                raise _Refused(
                    f"Cannot create flow run in work queue {name} because deployment is "
                    "not associated with a work pool."
                )
            self.queue_ids[name] = await self.worker_lookups._get_work_queue_id_from_name(
                session=self.session,
                work_pool_name=queue.work_pool.name,
                work_queue_name=name,
                create_queue_if_not_found=True,
            )
        return self.queue_ids[name]

    async def _check_job_variables(self, request: DeploymentFlowRunCreate) -> None:
        """Prefect's check, once per distinct set of job variables (usually none)."""
        key = json.dumps(request.job_variables, sort_keys=True, default=str)
        if key not in self.checked_job_variables:
            try:
                await validate_job_variables_for_deployment_flow_run(
                    self.session, self.deployment, request
                )
                self.checked_job_variables[key] = None
            except HTTPException as exc:
                self.checked_job_variables[key] = str(exc.detail)
        error = self.checked_job_variables[key]
        if error is not None:
            raise _Refused(error)

    async def _insert_runs(self, runs: Sequence[schemas.core.FlowRun]) -> dict[UUID, UUID]:
        """Insert the runs with their state fields (the state row follows); returns, for
        each run whose idempotency key was already taken, the id of the run holding it."""
        db = self.db
        created = now("UTC")
        rows = []
        for run in runs:
            state = run.state
            assert state is not None
            assert state.state_details.scheduled_time is not None
            row = run.model_dump_for_orm(
                exclude={"created", "state", "estimated_run_time", "estimated_start_time_delta"},
                exclude_unset=True,
            )
            # What Prefect's orchestration sets on a run's first, forced SCHEDULED state.
            row.update(
                id=run.id,
                created=created,
                state_type=state.type,
                state_name=state.name,
                state_timestamp=state.timestamp,
                expected_start_time=run.expected_start_time or state.state_details.scheduled_time,
                next_scheduled_start_time=state.state_details.scheduled_time,
            )
            rows.append(row)
        insert = db.queries.insert(db.FlowRun).on_conflict_do_nothing(
            index_elements=db.orm.flow_run_unique_upsert_columns
        )
        await self.session.execute(insert, rows)
        keys = [run.idempotency_key for run in runs if run.idempotency_key]
        holder: dict[str, UUID] = {}
        for start in range(0, len(keys), 500):  # SQLite's bound-parameter limit
            found = await self.session.execute(
                sa.select(db.FlowRun.id, db.FlowRun.idempotency_key).where(
                    db.FlowRun.flow_id == self.deployment.flow_id,
                    db.FlowRun.idempotency_key.in_(keys[start : start + 500]),
                )
            )
            holder.update({key: run_id for run_id, key in found.all()})
        return {
            run.id: holder[run.idempotency_key]
            for run in runs
            if run.idempotency_key and holder[run.idempotency_key] != run.id
        }

    async def _insert_first_states(self, runs: Sequence[schemas.core.FlowRun]) -> None:
        if not runs:
            return
        db = self.db
        states = []
        for run in runs:
            assert run.state is not None
            payload = run.state.model_dump_for_orm()
            payload.pop("data", None)
            states.append({**payload, "flow_run_id": run.id})
        await self.session.execute(sa.insert(db.FlowRunState), states)
        table = cast(sa.Table, db.FlowRun.__table__)
        # ``updated`` is given: its default (a SQL function with bound arguments on SQLite)
        # cannot be used in a many-row statement.
        updated = now("UTC")
        await self.session.execute(
            sa.update(table)
            .where(table.c.id == sa.bindparam("run_id"))
            .values(state_id=sa.bindparam("state_id"), updated=sa.bindparam("updated")),
            [
                {"run_id": run.id, "state_id": run.state.id, "updated": updated}
                for run in runs
                if run.state
            ],
        )


class _Refused(Exception):
    """One run of the request is refused (reported in its result, as Prefect's route does)."""


async def _emit_scheduled_events(
    db: PrefectDBInterface, deployment: Any, runs: Sequence[schemas.core.FlowRun]
) -> None:
    """The ``prefect.flow-run.Scheduled`` event of each new run, as Prefect's orchestration
    emits it; the related resources are read once per request instead of once per run."""
    if not runs:
        return
    events: list[Event] = []
    async with db.session_context() as session:
        # ``deployment`` was read by the request (Prefect's sessions keep loaded attributes).
        flow = await _read_flow(session=session, flow_id=deployment.flow_id)
        queues: dict[UUID, Any] = {}
        for run in runs:
            if run.work_queue_id and run.work_queue_id not in queues:
                queues[run.work_queue_id] = await _read_work_queue(
                    session, work_queue_id=run.work_queue_id
                )
        for run in runs:
            queue = queues.get(run.work_queue_id) if run.work_queue_id else None
            # Prefect's event code reads these through its cache before touching the DB.
            run_events._flow_run_resource_data_cache[run.id] = run_events._as_resource_data(
                cast(Any, run), flow, deployment, queue, queue.work_pool if queue else None
            )
            state = run.state
            assert state is not None
            events.append(
                await run_events.flow_run_state_change_event(
                    session=session,
                    occurred=state.timestamp,
                    flow_run=cast(Any, run),
                    initial_state_id=None,
                    initial_state=None,
                    validated_state_id=state.id,
                    validated_state=state,
                )
            )
    async with PrefectServerEventsClient() as client:
        for event in events:
            await client.emit(event)
