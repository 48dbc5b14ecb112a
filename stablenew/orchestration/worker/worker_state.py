"""What a worker publishes about itself as Prefect Variables, and reading it back.

- ``stablenew_hold__<worker>``: why the worker is not taking jobs (its WebUI is down or
  refuses it); ``stablenew queue`` prints it, and the Prefect UI shows it.
- ``stablenew_gpu__<worker>``: the flow run its GPU is generating for. Staged runs wait for the
  GPU inside their running flow, so from the API they look like the generating one; this is how
  ``cancel --current`` and ``stablenew queue`` tell them apart, and how recovery knows which
  run a dead worker was generating and when it last handed its GPU over (a sign of life).

Publishing is best effort: it never stops a worker or disturbs a job. A worker that stops
cleanly withdraws both (:func:`withdraw`); readers take only what workers Prefect reports online
published, so a worker that died says nothing either.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import VariableCreate, VariableUpdate
from prefect.client.schemas.objects import Variable, WorkerStatus
from prefect.exceptions import ObjectNotFound

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

HOLD_PREFIX = "stablenew_hold__"
GPU_HOLDER_PREFIX = "stablenew_gpu__"
_OURS = "stablenew_"
_PAGE = 200
# Prefect's rule for a worker that stopped: no heartbeat for three of its intervals.
_HEARTBEAT_SECONDS = 30
_MISSED = 3


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


async def withdraw(client: PrefectClient, worker: str, logger: Logger) -> None:
    """Withdraw everything ``worker`` published (it is shutting down): its hold and GPU
    holder, which would otherwise outlive it. Best effort, like publishing."""
    for name in (hold_variable_name(worker), gpu_variable_name(worker)):
        try:
            await client.delete_variable_by_name(name)
        except ObjectNotFound:
            pass
        except Exception as exc:
            logger.debug("could not delete %s: %r", name, exc)


@dataclass(frozen=True)
class GpuHandover:
    """A worker's last published GPU holder: the run, and when (the server's time)."""

    flow_run_id: UUID | None
    at: datetime | None


async def read_gpu_handover(client: PrefectClient, worker: str) -> GpuHandover | None:
    """What ``worker`` itself last published as its GPU holder (``None``: nothing, or the
    variable is another worker's whose name maps to the same variable name)."""
    try:
        variable = await client.read_variable_by_name(gpu_variable_name(worker))
    except Exception:
        return None
    value = variable.value if variable is not None else None
    if variable is None or not isinstance(value, dict) or value.get("worker") != worker:
        return None
    try:
        run_id: UUID | None = UUID(str(value.get("flow_run_id")))
    except ValueError:
        run_id = None
    return GpuHandover(run_id, variable.updated)


@dataclass(frozen=True)
class Published:
    """What the online workers of one pool publish."""

    holds: list[str] = field(default_factory=list)
    """``"<worker>: <reason>"`` for every worker holding."""
    gpu_holders: set[str] = field(default_factory=set)
    """Flow-run ids the workers' GPUs are generating for (one per worker)."""


async def online_workers(
    client: PrefectClient, pool: str, *, now: datetime | None = None
) -> set[str]:
    """Names of the pool's workers that are online: Prefect says so and the last heartbeat
    is recent (Prefect's own rule, three intervals; its status may lag a worker that died)."""
    now = now or datetime.now(UTC)
    try:
        workers = await client.read_workers_for_work_pool(pool)
    except httpx.HTTPStatusError as e:
        if e.response.status_code == 404:  # no such pool: no workers
            return set()
        raise
    return {
        w.name
        for w in workers
        if w.status == WorkerStatus.ONLINE
        and w.last_heartbeat_time is not None
        and now - w.last_heartbeat_time
        < timedelta(seconds=(w.heartbeat_interval_seconds or _HEARTBEAT_SECONDS) * _MISSED)
    }


async def read_published(client: PrefectClient, pool: str) -> Published:
    """Holds and GPU holders of the pool's online workers. A worker that died keeps its
    variables (nothing deletes them), so what an offline worker published is left out."""
    online = await online_workers(client, pool)
    holds: list[str] = []
    gpu_holders: set[str] = set()
    for v in await _our_variables(client):
        if not isinstance(v.value, dict) or v.value.get("worker") not in online:
            continue
        if v.name.startswith(HOLD_PREFIX):
            holds.append(f"{v.value.get('worker')}: {v.value.get('reason')}")
        else:
            gpu_holders.add(str(v.value.get("flow_run_id")))
    return Published(holds=holds, gpu_holders=gpu_holders)


async def read_gpu_holders(client: PrefectClient, pool: str) -> set[str]:
    """Flow-run ids the GPUs of ``pool``'s online workers are generating for."""
    return (await read_published(client, pool)).gpu_holders


async def _our_variables(client: PrefectClient) -> list[Variable]:
    """Variables named like ours (the server matches ``like_`` anywhere in the name)."""
    found: list[Variable] = []
    offset = 0
    while True:
        body = {"variables": {"name": {"like_": _OURS}}, "limit": _PAGE, "offset": offset}
        response = await client.request("POST", "/variables/filter", json=body)
        page = Variable.model_validate_list(response.json())
        found.extend(v for v in page if v.name.startswith((HOLD_PREFIX, GPU_HOLDER_PREFIX)))
        if len(page) < _PAGE:
            return found
        offset += _PAGE
