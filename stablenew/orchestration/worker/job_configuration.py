"""What Prefect's base worker asks a worker type for: its job configuration, variables and
result. A ``stablenew`` run has no infrastructure of its own (it executes in the worker's
process), so there is nothing to configure per run."""

from __future__ import annotations

from typing import Self
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, WorkPool
from prefect.client.schemas.responses import DeploymentResponse
from prefect.workers.base import BaseJobConfiguration, BaseVariables, BaseWorkerResult


class StableNewJobConfiguration(BaseJobConfiguration):
    """Nothing to configure per run: the worker's own settings bind it to its WebUI."""

    @classmethod
    def _base_environment(cls) -> dict[str, str]:
        """Prefect's settings, as environment variables for a run's own infrastructure:
        there is none, a run executes in this process under its settings. Dumping every
        setting for every run was 16% of the worker's CPU (py-spy on bench/overhead.py).
        Guarded by tests/orchestration/test_job_configuration.py."""
        return {}

    @classmethod
    async def resolve_for_flow_run(
        cls,
        flow_run: FlowRun,
        *,
        client: PrefectClient,
        work_pool: WorkPool,
        worker_name: str,
        worker_id: UUID | None = None,
        deployment: DeploymentResponse | None = None,
    ) -> Self:
        """The base class reads the run's deployment and flow for every run, to merge job
        variables we do not have; two API reads per job that the GPU would wait behind."""
        configuration: Self = await cls.from_template_and_values(
            base_job_template=work_pool.base_job_template,
            values=dict(flow_run.job_variables or {}),
            client=client,
        )
        configuration.prepare_for_flow_run(
            flow_run=flow_run,
            deployment=deployment,
            work_pool=work_pool,
            worker_name=worker_name,
            worker_id=worker_id,
        )
        return configuration


class StableNewVariables(BaseVariables):
    """No per-deployment infrastructure variables."""


class StableNewWorkerResult(BaseWorkerResult):
    """Outcome of one in-process run."""
