"""What a worker publishes about itself as Prefect Variables, and reading it back.

- ``stablenew_hold__<worker>``: why the worker is not taking jobs (its WebUI is down or
  refuses it); ``stablenew queue`` prints it, and the Prefect UI shows it.
- ``stablenew_gpu__<worker>``: the flow run its GPU is generating for. Staged runs wait for the
  GPU inside their render task, so from the API they look like the generating one; this is how
  ``cancel --current`` tells them apart.

Publishing is best effort: it never stops a worker or disturbs a job.
"""

from __future__ import annotations

import logging
import re
import time
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import VariableCreate, VariableUpdate

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

HOLD_PREFIX = "stablenew_hold__"
GPU_HOLDER_PREFIX = "stablenew_gpu__"


def hold_variable_name(worker_name: str) -> str:
    return HOLD_PREFIX + _suffix(worker_name)


def gpu_variable_name(worker_name: str) -> str:
    return GPU_HOLDER_PREFIX + _suffix(worker_name)


def _suffix(worker_name: str) -> str:
    return re.sub(r"[^a-z0-9_]+", "_", worker_name.lower())[:200]


async def _put(client: PrefectClient, name: str, value: dict[str, object]) -> None:
    """Update the variable, creating it the first time (one request in the common case)."""
    try:
        await client.update_variable(VariableUpdate(name=name, value=value))
    except httpx.HTTPStatusError as e:
        if e.response.status_code != 404:
            raise
        await client.create_variable(VariableCreate(name=name, value=value))


async def publish_hold(
    client: PrefectClient, worker: str, reason: str | None, logger: Logger
) -> None:
    """Publish why ``worker`` holds (``None``: it does not any more)."""
    try:
        if reason is None:
            await client.delete_variable_by_name(hold_variable_name(worker))
        else:
            value = {"worker": worker, "reason": reason, "since": time.time()}
            await _put(client, hold_variable_name(worker), value)
    except Exception as exc:
        logger.debug("could not publish hold state: %r", exc)


async def publish_gpu_holder(
    client: PrefectClient, worker: str, flow_run_id: UUID, logger: Logger
) -> None:
    value = {"worker": worker, "flow_run_id": str(flow_run_id), "since": time.time()}
    try:
        await _put(client, gpu_variable_name(worker), value)
    except Exception as exc:
        logger.debug("could not publish the GPU holder: %r", exc)


async def read_holds(client: PrefectClient) -> list[str]:
    """``"<worker>: <reason>"`` for every worker holding."""
    return [
        f"{v.value.get('worker')}: {v.value.get('reason')}"
        for v in await client.read_variables(limit=200)
        if v.name.startswith(HOLD_PREFIX) and isinstance(v.value, dict)
    ]


async def read_gpu_holders(client: PrefectClient) -> set[str]:
    """Flow-run ids the workers' GPUs are generating for (one per worker)."""
    return {
        str(v.value.get("flow_run_id"))
        for v in await client.read_variables(limit=200)
        if v.name.startswith(GPU_HOLDER_PREFIX) and isinstance(v.value, dict)
    }
