"""Cancel many runs at once: one request to the embedded server's cancel route
(:mod:`cancel_route`, one transaction), or, on a Prefect server without it, one orchestrated
state write per run, several in flight.

Either way each run is proposed CANCELLING, never forced: Prefect turns a queued run into
CANCELLED and leaves a claimed or running one CANCELLING, which the worker acts on. Forcing
CANCELLED onto a run a worker has just claimed would let it start anyway.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import OrchestrationResult
from prefect.states import Cancelled, Cancelling

from stablenew.orchestration._prefect import read_runs_by_id
from stablenew.orchestration.services.queue_view import ACTIVE, pool_runs

logger = logging.getLogger(__name__)

CANCEL_ROUTE = "/stablenew/flow_runs/cancel"
# State writes in flight on the fallback path. More buys little on SQLite (one writer at a
# time; the rest wait for the lock) and would crowd out the workers' own writes.
FALLBACK_CONCURRENCY = 8
MESSAGE = "cancel requested"
# How long a cancel waits for the workers to stop what it left CANCELLING (their cancel
# watch polls twice a second, interrupts the WebUI and ends the run CANCELLED).
SETTLE_SECONDS = 3.0
SETTLE_POLL_SECONDS = 0.2


async def cancel_matching(
    client: PrefectClient,
    *,
    pool: str | None = None,
    tags: Sequence[str] = (),
    flow_run_ids: Sequence[UUID] | None = None,
    message: str = MESSAGE,
) -> list[FlowRun]:
    """Cancel every active run of ``pool`` with all ``tags`` (and among ``flow_run_ids``,
    when given); returns them as they are afterwards (without their parameters when the
    route answered). CANCELLED: it will never start; CANCELLING: its worker ends it."""
    if flow_run_ids is not None and not flow_run_ids:
        return []
    body: dict[str, object] = {"tags": list(tags), "message": message}
    if pool is not None:
        body["work_pool_name"] = pool
    if flow_run_ids is not None:
        body["flow_run_ids"] = [str(i) for i in flow_run_ids]
    try:
        response = await client.request("POST", CANCEL_ROUTE, json=body)  # type: ignore[arg-type]
    except httpx.HTTPStatusError as e:
        if e.response.status_code not in (404, 405):
            raise
        logger.info("no bulk cancel route on this Prefect server; cancelling run by run")
        return await cancel_one_by_one(
            client, pool=pool, tags=tags, flow_run_ids=flow_run_ids, message=message
        )
    return [FlowRun.model_validate(answer["flow_run"]) for answer in response.json()]


async def cancel_one_by_one(
    client: PrefectClient,
    *,
    pool: str | None = None,
    tags: Sequence[str] = (),
    flow_run_ids: Sequence[UUID] | None = None,
    message: str = MESSAGE,
    concurrency: int = FALLBACK_CONCURRENCY,
) -> list[FlowRun]:
    """The fallback: read the runs, then one orchestrated state write each, ``concurrency``
    in flight, those a worker would take first first. A run claimed after the read is still
    proposed CANCELLING, which Prefect applies to the run as it is now."""
    if flow_run_ids is not None:
        runs = [
            r
            for r in await read_runs_by_id(client, flow_run_ids)
            if r.state_type in ACTIVE and set(tags) <= set(r.tags)
        ]
    else:
        assert pool is not None, "give a pool or flow run ids"
        runs = await pool_runs(client, pool, ACTIVE, list(tags) or None)
    limit = asyncio.Semaphore(concurrency)

    async def cancel(run: FlowRun) -> FlowRun:
        async with limit:
            result: OrchestrationResult[Any]
            if run.state is None:
                result = await client.set_flow_run_state(
                    run.id, Cancelled(message=message), force=True
                )
            else:
                result = await client.set_flow_run_state(run.id, Cancelling(message=message))
            if result.state is None:  # aborted: the run moved on meanwhile
                return await client.read_flow_run(run.id)
            return run.model_copy(update={"state": result.state, "state_type": result.state.type})

    return list(await asyncio.gather(*(cancel(r) for r in runs)))


async def settle(
    client: PrefectClient, runs: Sequence[FlowRun], *, timeout: float | None = None
) -> list[FlowRun]:
    """Wait (bounded) until the workers have ended the runs left CANCELLING; returns ``runs``
    as they are then. Once it returns nothing of them is generating or about to: a worker
    that had already handed one the GPU before noticing has interrupted it. A run whose
    worker is gone stays CANCELLING when the time is up."""
    waiting = {r.id for r in runs if r.state_type == StateType.CANCELLING}
    latest = {r.id: r for r in runs}
    deadline = time.monotonic() + (SETTLE_SECONDS if timeout is None else timeout)
    while waiting and time.monotonic() < deadline:
        await asyncio.sleep(SETTLE_POLL_SECONDS)
        for run in await read_runs_by_id(client, list(waiting), left_scheduled=True):
            if run.state_type != StateType.CANCELLING:
                latest[run.id] = run
                waiting.discard(run.id)
    return [latest[r.id] for r in runs]
