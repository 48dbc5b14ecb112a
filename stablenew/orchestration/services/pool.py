"""The GPU work pool and its priority queues, created or corrected idempotently."""

from __future__ import annotations

import contextlib
from typing import Literal, get_args

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolCreate
from prefect.exceptions import ObjectAlreadyExists, ObjectNotFound

from stablenew.errors import ConfigError

Priority = Literal["urgent", "high", "normal", "low"]
PRIORITIES: tuple[Priority, ...] = get_args(Priority)
DEFAULT_PRIORITY: Priority = "normal"
WORKER_TYPE = "stablenew"

# Prefect runs lower numbers first, strictly across queues, FIFO inside one.
QUEUE_PRIORITY: dict[str, int] = {name: i + 1 for i, name in enumerate(PRIORITIES)}
# Prefect creates "default" at priority 1; park it behind ours so it never overtakes them.
QUEUE_PRIORITY["default"] = len(PRIORITIES) + 1


def check_priority(value: str) -> Priority:
    for known in PRIORITIES:
        if value == known:
            return known
    raise ConfigError(
        f"unknown priority {value!r}; expected one of {', '.join(PRIORITIES)}", source="priority"
    )


async def ensure_pool(client: PrefectClient, pool_name: str, pool_type: str = WORKER_TYPE) -> None:
    """Create the pool (if missing) and its queues with the right priorities."""
    try:
        await client.read_work_pool(pool_name)
    except ObjectNotFound:
        with contextlib.suppress(ObjectAlreadyExists):  # another process won the race
            await client.create_work_pool(WorkPoolCreate(name=pool_name, type=pool_type))
    existing = {q.name: q for q in await client.read_work_queues(work_pool_name=pool_name)}
    for name in PRIORITIES:
        if name not in existing:
            with contextlib.suppress(ObjectAlreadyExists):
                await client.create_work_queue(
                    name=name, work_pool_name=pool_name, priority=QUEUE_PRIORITY[name]
                )
    # Creating a queue at a taken priority shifts the others, so set them all explicitly.
    queues = {q.name: q for q in await client.read_work_queues(work_pool_name=pool_name)}
    for queue_name, wanted in QUEUE_PRIORITY.items():
        queue = queues.get(queue_name)
        if queue is not None and queue.priority != wanted:
            await client.update_work_queue(queue.id, priority=wanted)
