"""Apply ``prefect.yaml``: work pools, priority queues and deployments, idempotently.

A deployment names its flow by entrypoint relative to the project, nothing more: a StableNew
worker loads it from its own copy of the project, wherever that lives on its machine. Only a
pool for Prefect's stock process worker gets a ``set_working_directory`` pull step to this
checkout (that worker needs one; its machines must have the project at the same path).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any
from uuid import UUID

import yaml
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentScheduleCreate
from prefect.client.schemas.schedules import CronSchedule
from prefect.flows import Flow, load_flow_from_entrypoint
from prefect.utilities.callables import parameter_schema
from pydantic import BaseModel, Field

import stablenew
from stablenew.errors import ConfigError
from stablenew.orchestration.services.pool import WORKER_TYPE, ensure_pool

RENDER_DEPLOYMENT = "render-job"
SUBMIT_DEPLOYMENT = "submit-pack"
RENDER_FLOW_NAME = "render-job"
CONTROL_POOL = "stablenew-control"


class _Schedule(BaseModel):
    cron: str
    timezone: str = "UTC"
    active: bool = True


class _WorkPoolRef(BaseModel):
    name: str
    work_queue_name: str | None = None


class DeploymentSpec(BaseModel):
    """One entry of ``prefect.yaml``'s ``deployments`` (the subset we use)."""

    name: str
    entrypoint: str
    description: str | None = None
    tags: list[str] = Field(default_factory=list)
    parameters: dict[str, Any] = Field(default_factory=dict)
    schedules: list[_Schedule] = Field(default_factory=list)
    work_pool: _WorkPoolRef


def project_root() -> Path:
    """The checkout that holds ``prefect.yaml`` and ``flows/``: the ``stablenew`` package's
    parent folder."""
    return Path(stablenew.__file__).resolve().parents[1]


def read_specs(path: Path | None = None) -> list[DeploymentSpec]:
    path = path or project_root() / "prefect.yaml"
    try:
        doc = yaml.safe_load(path.read_text(encoding="utf-8"))
        return [DeploymentSpec.model_validate(d) for d in doc["deployments"]]
    except (OSError, yaml.YAMLError, KeyError, TypeError, ValueError) as e:
        raise ConfigError(f"cannot read deployments: {e}", source=str(path)) from e


async def apply(
    client: PrefectClient,
    *,
    gpu_pool: str = "stablenew-gpu",
    gpu_pool_type: str = WORKER_TYPE,
    specs: list[DeploymentSpec] | None = None,
) -> dict[str, UUID]:
    """Create/update pools, queues and deployments; returns deployment ids by name.

    ``gpu_pool`` replaces the GPU pool named in the file, so settings can rename it;
    ``gpu_pool_type="process"`` makes it a pool for Prefect's stock process worker.
    """
    root = project_root()
    specs = specs if specs is not None else read_specs(root / "prefect.yaml")
    ids: dict[str, UUID] = {}
    pools_done: set[str] = set()
    for spec in specs:
        pool = gpu_pool if spec.work_pool.name == "stablenew-gpu" else spec.work_pool.name
        if pool not in pools_done:
            await ensure_pool(client, pool, gpu_pool_type if pool == gpu_pool else WORKER_TYPE)
            pools_done.add(pool)
        flow: Flow[..., Any] = load_flow_from_entrypoint(str(root / spec.entrypoint))
        flow_id = await client.create_flow_from_name(flow.name)
        stock = pool == gpu_pool and gpu_pool_type != WORKER_TYPE
        ids[spec.name] = await client.create_deployment(
            flow_id=flow_id,
            name=spec.name,
            description=spec.description,
            entrypoint=spec.entrypoint,
            path=str(root) if stock else None,
            pull_steps=[
                {"prefect.deployments.steps.set_working_directory": {"directory": str(root)}}
            ]
            if stock
            else [],
            work_pool_name=pool,
            work_queue_name=spec.work_pool.work_queue_name,
            tags=spec.tags,
            parameters=spec.parameters,
            parameter_openapi_schema=parameter_schema(flow).model_dump_for_openapi(),
            # Records are validated by the job service; re-validating every parameter
            # server-side would only slow bulk submission.
            enforce_parameter_schema=False,
            schedules=[
                DeploymentScheduleCreate(
                    schedule=CronSchedule(cron=s.cron, timezone=s.timezone), active=s.active
                )
                for s in spec.schedules
            ],
        )
    return ids
