"""What a worker publishes about itself as a Prefect Variable, and reading it back.

``stablenew_hold__<worker>``: why the worker is not taking jobs (its WebUI is down or refuses
it); ``stablenew queue`` prints it, and the Prefect UI shows it. (Which run a GPU generates
for needs no variable: a run turns RUNNING when it gets its worker's GPU.)

Publishing is best effort: it never stops a worker or disturbs a job. A worker that stops
cleanly withdraws it (:func:`withdraw`), and one that stopped before that change left a GPU
variable (``stablenew_gpu__<worker>``), withdrawn too; readers take only what workers Prefect
reports online published, so a worker that died says nothing either.
"""

from __future__ import annotations

import logging
import re
import time
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta

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
    """What workers before the start at the GPU grant published their GPU holder as."""
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


async def withdraw(client: PrefectClient, worker: str, logger: Logger) -> None:
    """Withdraw everything ``worker`` published (it is shutting down), which would otherwise
    outlive it. Best effort, like publishing."""
    for name in (hold_variable_name(worker), gpu_variable_name(worker)):
        try:
            await client.delete_variable_by_name(name)
        except ObjectNotFound:
            pass
        except Exception as exc:
            logger.debug("could not delete %s: %r", name, exc)


@dataclass(frozen=True)
class Published:
    """What the online workers of one pool publish."""

    holds: list[str] = field(default_factory=list)
    """``"<worker>: <reason>"`` for every worker holding."""


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
    """Holds of the pool's online workers. A worker that died keeps its variable (nothing
    deletes it), so what an offline worker published is left out."""
    online = await online_workers(client, pool)
    holds = [
        f"{v.value.get('worker')}: {v.value.get('reason')}"
        for v in await _our_variables(client)
        if isinstance(v.value, dict) and v.value.get("worker") in online
    ]
    return Published(holds=holds)


async def _our_variables(client: PrefectClient) -> list[Variable]:
    """Variables named like ours (the server matches ``like_`` anywhere in the name)."""
    found: list[Variable] = []
    offset = 0
    while True:
        body = {"variables": {"name": {"like_": _OURS}}, "limit": _PAGE, "offset": offset}
        response = await client.request("POST", "/variables/filter", json=body)
        page = Variable.model_validate_list(response.json())
        found.extend(v for v in page if v.name.startswith(HOLD_PREFIX))
        if len(page) < _PAGE:
            return found
        offset += _PAGE
