"""Follow a set of flow runs until every one is terminal (for ``run --wait`` style commands)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from uuid import UUID

from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterId

from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.jobs import JobRef, job_ref
from stablenew.orchestration.submission import PAGE


async def follow(
    flow_run_ids: Sequence[UUID], *, interval: float = 0.5, timeout: float | None = None
) -> AsyncIterator[dict[str, JobRef]]:
    """Yield a snapshot {flow_run_id: JobRef} each tick until all runs are terminal.

    Only runs not yet terminal are re-read, so a large pack gets cheaper as it drains.
    ``timeout`` bounds the whole wait (``None``: until done).
    """
    latest: dict[str, JobRef] = {}
    open_ids = list(flow_run_ids)
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    async with prefect_client() as client:
        while True:
            for i in range(0, len(open_ids), PAGE):
                chunk = open_ids[i : i + PAGE]
                runs = await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(id=FlowRunFilterId(any_=chunk)), limit=PAGE
                )
                for run in runs:
                    latest[str(run.id)] = job_ref(run)
            open_ids = [
                rid
                for rid in open_ids
                if not ((ref := latest.get(str(rid))) is not None and ref.status.is_terminal)
            ]
            yield latest
            if not open_ids:
                return
            if deadline is not None and loop.time() >= deadline:
                return
            await asyncio.sleep(interval)
