"""Follow a set of flow runs until every one is terminal (for ``run --wait`` style commands)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Sequence
from uuid import UUID

from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client, read_runs_by_id
from stablenew.orchestration.services.queue_view import JobRef, job_ref

# Ids per "has anything left SCHEDULED?" query. The answer is small (what changed since the
# last tick), so a wide id list is cheap; it is paged in case many changed at once.
_WAITING_CHUNK = 2000


async def follow(
    flow_run_ids: Sequence[UUID], *, interval: float = 1.0, timeout: float | None = None
) -> AsyncIterator[dict[str, JobRef]]:
    """Yield a snapshot {flow_run_id: JobRef} each tick until all runs are terminal.

    After a first full read, a tick reads only runs that may have changed: those not
    SCHEDULED, i.e. those last seen active (a handful: one worker runs one job) and those
    that have left their queue since, in one query.
    Re-reading every waiting run, each with its full record, every tick cost the server more
    CPU than running the jobs, and on a small machine that CPU is taken from the pipeline.
    ``timeout`` bounds the whole wait (``None``: until done).
    """
    latest: dict[str, JobRef] = {}
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    async with prefect_client() as client:
        for run in await read_runs_by_id(client, flow_run_ids):
            latest[str(run.id)] = job_ref(run)
        while True:
            open_refs = [ref for ref in latest.values() if not ref.status.is_terminal]
            yield latest
            if not open_refs:
                return
            if deadline is not None and loop.time() >= deadline:
                return
            await asyncio.sleep(interval)
            # One read a tick: every open run that is not SCHEDULED, i.e. those active and
            # those that have left their queue. An active run missing from the answer was
            # put back in its queue (rare): read on its own.
            changed = await read_runs_by_id(
                client,
                [r.flow_run_id for r in open_refs],
                left_scheduled=True,
                ids_per_query=_WAITING_CHUNK,
            )
            seen = {str(run.id) for run in changed}
            requeued = [
                r.flow_run_id
                for r in open_refs
                if r.status is not JobStatus.QUEUED and str(r.flow_run_id) not in seen
            ]
            if requeued:
                changed += await read_runs_by_id(client, requeued)
            for run in changed:
                latest[str(run.id)] = job_ref(run)
