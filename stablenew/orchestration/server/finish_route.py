"""A route the embedded Prefect server adds for a GPU worker: a run's final state and its
artifacts in one request.

    POST /stablenew/flow_runs/{id}/finish
    body:   {"state": {"type": "COMPLETED", ...}, "artifacts": [ArtifactCreate, ...]}
    answer: as ``POST /flow_runs/{id}/set_state`` answers (an ``OrchestrationResult``)

A worker ends each render run with two requests: the markdown artifact that shows the run's
images in the Prefect UI, then the COMPLETED state. Each request costs the server its own
session and transaction and the worker its own round trip. Here the state is proposed
through Prefect's orchestration (``models.flow_runs.set_flow_run_state`` with the server's
flow policy, as the ``set_state`` route does, event included) and, if accepted, the
artifacts are created for the run (``models.artifacts.create_artifact``, as
``POST /artifacts/`` does) in the same transaction, each with the
``prefect.artifact.created`` event Prefect's client emits. A state that is not accepted (the
run was cancelled or taken back meanwhile) creates no artifact, so a request sent again after
its answer was lost creates none twice.

Against any other Prefect server the route is missing (404) and the worker creates the
artifact, then proposes the state.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID, uuid4

from fastapi import Body, Depends, HTTPException, Path, Response, status
from prefect.server import models, schemas
from prefect.server.database import PrefectDBInterface, provide_database_interface
from prefect.server.events.clients import PrefectServerEventsClient
from prefect.server.events.schemas.events import Event
from prefect.server.schemas.responses import OrchestrationResult
from prefect.server.utilities.server import PrefectRouter
from prefect.types._datetime import now

from stablenew.orchestration.server.orchestration import FlowOrchestration, flow_orchestration

logger = logging.getLogger(__name__)

ROUTE = "/stablenew/flow_runs/{id}/finish"
MAX_ARTIFACTS = 16
FINAL = {
    schemas.states.StateType.COMPLETED,
    schemas.states.StateType.FAILED,
    schemas.states.StateType.CANCELLED,
    schemas.states.StateType.CRASHED,
}

router = PrefectRouter(prefix="/stablenew", tags=["StableNew"])


@router.post("/flow_runs/{id:uuid}/finish")
async def finish_flow_run(
    response: Response,
    flow_run_id: UUID = Path(..., alias="id"),
    state: schemas.actions.StateCreate = Body(...),
    artifacts: list[schemas.actions.ArtifactCreate] = Body(
        default_factory=list, max_length=MAX_ARTIFACTS
    ),
    db: PrefectDBInterface = Depends(provide_database_interface),
    orchestration: FlowOrchestration = Depends(flow_orchestration),
) -> OrchestrationResult:
    """Propose a final state; if accepted, create ``artifacts`` for the run in the same
    transaction."""
    if state.type not in FINAL:
        raise HTTPException(
            status.HTTP_422_UNPROCESSABLE_ENTITY, f"not a final state: {state.type.value}"
        )
    right_now = now("UTC")
    async with db.session_context(begin_transaction=True, with_for_update=True) as session:
        result = await orchestration.propose(
            session,
            flow_run_id,
            schemas.states.State.model_validate(state),
        )
        created: list[Any] = []
        if result.status == schemas.responses.SetStateStatus.ACCEPT:
            for artifact in artifacts:
                created.append(
                    await models.artifacts.create_artifact(
                        session=session,
                        artifact=schemas.core.Artifact(
                            **{**artifact.model_dump(), "flow_run_id": flow_run_id}
                        ),
                    )
                )
    if created:
        await _emit_created(created, flow_run_id)
    # As the set_state route: 201 if a new state was created.
    new_state = result.state is not None and result.state.timestamp >= right_now
    response.status_code = status.HTTP_201_CREATED if new_state else status.HTTP_200_OK
    return result


async def _emit_created(artifacts: list[Any], flow_run_id: UUID) -> None:
    """The ``prefect.artifact.created`` event Prefect's client emits after it creates an
    artifact (``ArtifactAsyncClient.create_artifact``), with the run as related resource."""
    try:
        async with PrefectServerEventsClient() as events:
            for artifact in artifacts:
                resource = {"prefect.resource.id": f"prefect.artifact.{artifact.id}"}
                if artifact.key:
                    resource["prefect.resource.name"] = artifact.key
                payload = {
                    name: value
                    for name, value in (
                        ("key", artifact.key),
                        ("type", artifact.type),
                        ("description", artifact.description),
                    )
                    if value is not None
                }
                await events.emit(
                    Event(
                        occurred=now("UTC"),
                        event="prefect.artifact.created",
                        resource=resource,
                        related=[
                            {
                                "prefect.resource.id": f"prefect.flow-run.{flow_run_id}",
                                "prefect.resource.role": "flow-run",
                            }
                        ],
                        payload=payload,
                        id=uuid4(),
                    )
                )
    except Exception:  # as the client's: the artifact stands without its event
        logger.exception("could not emit the created event of the artifacts of %s", flow_run_id)
