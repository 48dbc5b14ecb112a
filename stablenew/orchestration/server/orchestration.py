"""What our routes need to propose a flow run state as Prefect's ``set_state`` route does:
the server's flow policy and orchestration parameters (with the request's API version) and
the client's version, from the same FastAPI dependencies that route takes."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any
from uuid import UUID

from fastapi import Depends
from prefect.server import models, schemas
from prefect.server.api import dependencies
from prefect.server.orchestration import dependencies as orchestration_dependencies
from prefect.server.orchestration.policies import FlowRunOrchestrationPolicy
from prefect.server.schemas.responses import OrchestrationResult


@dataclass(frozen=True)
class FlowOrchestration:
    policy: type[FlowRunOrchestrationPolicy]
    parameters: dict[str, Any]
    client_version: str | None

    async def propose(
        self, session: Any, flow_run_id: UUID, state: schemas.states.State
    ) -> OrchestrationResult:
        """``models.flow_runs.set_flow_run_state``, not forced, in ``session``'s transaction."""
        return await models.flow_runs.set_flow_run_state(
            session=session,
            flow_run_id=flow_run_id,
            state=state,
            force=False,
            flow_policy=self.policy,
            # A copy per proposal: the orchestration may write into it.
            orchestration_parameters=dict(self.parameters),
            client_version=self.client_version,
        )


def flow_orchestration(
    flow_policy: type[FlowRunOrchestrationPolicy] = Depends(
        orchestration_dependencies.provide_flow_policy
    ),
    orchestration_parameters: dict[str, Any] = Depends(
        orchestration_dependencies.provide_flow_orchestration_parameters
    ),
    api_version: str = Depends(dependencies.provide_request_api_version),
    client_version: str | None = Depends(dependencies.get_prefect_client_version),
) -> FlowOrchestration:
    """The dependency: as the ``set_state`` route, the API version joins the parameters."""
    return FlowOrchestration(
        flow_policy, {**orchestration_parameters, "api-version": api_version}, client_version
    )
