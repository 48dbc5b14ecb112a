"""``monitor.follow`` (what ``stablenew run`` and the SDK watch a pack with) against the live
server: one read a tick finds a run that starts, one put back in its queue, and its end."""

from __future__ import annotations

import asyncio
from uuid import UUID

import pytest
from prefect.states import Cancelled, Running, Scheduled

from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services import monitor
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.monitor import follow
from stablenew.orchestration.services.queue_view import job_ref
from tests.orchestration.conftest import LiveStack, make_record


@pytest.mark.parametrize("route", ["changes route", "Prefect's filter"])
def test_follow_sees_a_run_start_go_back_to_its_queue_and_end(
    live: LiveStack, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    if route != "changes route":
        # A path no server has stands for a Prefect server without our changes route.
        monkeypatch.setattr(monitor, "CHANGES_ROUTE", "/stablenew/absent/changes")
    service = JobService()
    service.pause()  # nothing claims the runs: the test moves them itself
    jobs = service.submit([make_record(f"followed {i}") for i in range(2)])
    moved = UUID(service.status(jobs[0]).flow_run_id)
    other = UUID(service.status(jobs[1]).flow_run_id)

    async def watch() -> list[tuple[JobStatus, JobStatus]]:
        seen: list[tuple[JobStatus, JobStatus]] = []
        # Each step is written after the snapshot before it: one tick must show it.
        steps = [
            (moved, Running(message="started (test)")),
            (moved, Scheduled(message="Requeued (test)")),
            (moved, Cancelled(message="test over")),
            (other, Cancelled(message="test over")),
        ]
        async with prefect_client() as client:
            async for snapshot in follow([moved, other], interval=0.1, timeout=60):
                now = (snapshot[str(moved)].status, snapshot[str(other)].status)
                if not seen or seen[-1] != now:
                    seen.append(now)
                    # What a tick shows is what a full read of each run shows.
                    for run_id in (moved, other):
                        assert snapshot[str(run_id)] == job_ref(await client.read_flow_run(run_id))
                    if steps:
                        run_id, state = steps.pop(0)
                        await client.set_flow_run_state(run_id, state, force=True)
        return seen

    seen = asyncio.run(watch())
    assert seen == [
        (JobStatus.QUEUED, JobStatus.QUEUED),
        (JobStatus.RUNNING, JobStatus.QUEUED),
        (JobStatus.QUEUED, JobStatus.QUEUED),
        (JobStatus.CANCELLED, JobStatus.QUEUED),
        (JobStatus.CANCELLED, JobStatus.CANCELLED),
    ]
