"""Follow a set of flow runs until every one is terminal (for ``run --wait`` style commands)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Mapping, Sequence
from datetime import datetime
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient
from pydantic import BaseModel, TypeAdapter

from stablenew.lifecycle import JobStatus, status_from_prefect
from stablenew.orchestration._prefect import prefect_client, read_runs_by_id
from stablenew.orchestration.services.queue_view import JobRef, job_ref

CHANGES_ROUTE = "/stablenew/flow_runs/changes"  # see server/changes_route.py

# Ids per tick's query (what changed, or what left SCHEDULED). The answer is small (what
# changed since the last tick), so a wide id list is cheap; it is paged in case many changed.
_WAITING_CHUNK = 2000


class StateChange(BaseModel):
    """A run whose state is no longer the one its follower last saw, as the changes route
    answers it: what a job's status line shows."""

    id: UUID
    state_id: UUID | None
    state_type: str | None
    state_name: str | None
    state_message: str | None
    work_queue_name: str | None
    expected_start_time: datetime | None

    def applied_to(self, ref: JobRef) -> JobRef:
        return ref.model_copy(
            update={
                "status": status_from_prefect(self.state_type),
                "state_name": self.state_name,
                "message": self.state_message,
                "priority": self.work_queue_name,
                "expected_start": self.expected_start_time,
            }
        )


_CHANGES = TypeAdapter(list[StateChange])


async def read_changes(
    client: PrefectClient, seen: Mapping[UUID, UUID | None]
) -> list[StateChange] | None:
    """The runs of ``seen`` whose state is no longer the one given (see
    ``server/changes_route.py``); ``None`` when the server lacks the route."""
    out: list[StateChange] = []
    ids = list(seen)
    for start in range(0, len(ids), _WAITING_CHUNK):
        chunk = {
            str(i): str(seen[i]) if seen[i] else None for i in ids[start : start + _WAITING_CHUNK]
        }
        try:
            response = await client.request(
                "POST",
                CHANGES_ROUTE,  # type: ignore[arg-type]
                json={"seen": chunk},
            )
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 404:
                return None
            raise
        out += _CHANGES.validate_json(response.content)
    return out


async def follow(
    flow_run_ids: Sequence[UUID], *, interval: float = 1.0, timeout: float | None = None
) -> AsyncIterator[dict[str, JobRef]]:
    """Yield a snapshot {flow_run_id: JobRef} each tick until all runs are terminal.

    After a first full read, a tick asks only for what changed: on our server, the runs
    whose state is no longer the one last seen, as a few columns (``server/changes_route.py``);
    on any other, the runs not SCHEDULED, i.e. those last seen active (a handful: one worker
    runs one job) and those that have left their queue since, in one query.
    Re-reading every waiting run, each with its full record, every tick cost the server more
    CPU than running the jobs, and on a small machine that CPU is taken from the pipeline.
    ``timeout`` bounds the whole wait (``None``: until done).
    """
    latest: dict[str, JobRef] = {}
    state_ids: dict[UUID, UUID | None] = {}
    loop = asyncio.get_running_loop()
    deadline = None if timeout is None else loop.time() + timeout
    lean = True  # until the server turns out to lack the changes route
    async with prefect_client() as client:
        for run in await read_runs_by_id(client, flow_run_ids):
            latest[str(run.id)] = job_ref(run)
            state_ids[run.id] = run.state_id
        while True:
            open_refs = [ref for ref in latest.values() if not ref.status.is_terminal]
            yield latest
            if not open_refs:
                return
            if deadline is not None and loop.time() >= deadline:
                return
            await asyncio.sleep(interval)
            if lean:
                # Our server answers only what changed since the last tick, lean.
                changes = await read_changes(
                    client, {UUID(r.flow_run_id): state_ids[UUID(r.flow_run_id)] for r in open_refs}
                )
                if changes is not None:
                    for change in changes:
                        latest[str(change.id)] = change.applied_to(latest[str(change.id)])
                        state_ids[change.id] = change.state_id
                    continue
                lean = False
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
                state_ids[run.id] = run.state_id
