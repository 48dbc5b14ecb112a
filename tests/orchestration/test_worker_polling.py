"""How a GPU worker asks for work, on the real stack: asking (our claim route, or Prefect's
``get_scheduled_flow_runs`` where the server lacks it) marks queues and deployments polled and
costs the server several times what counting the due runs does, so a worker with nothing to
fill counts, and asks only when a run is due (or every ``READY_POLL_SECONDS``, which keeps the
queues "ready" in Prefect's UI)."""

from __future__ import annotations

import asyncio
import time
import uuid
from datetime import UTC, datetime
from typing import Any

import pytest

from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.worker import gpu_gate, scheduled_runs
from stablenew.orchestration.worker import gpu_worker as worker_module
from stablenew.orchestration.worker.gpu_worker import StableNewWorker
from tests.orchestration.conftest import LiveStack, make_record

pytestmark = pytest.mark.slow

POOL = "stablenew-gpu"


class Recorded:
    """What one worker asks the server for (runs handed out per ask) and counts (due?)."""

    def __init__(self, worker: StableNewWorker) -> None:
        self.asks: list[int] = []
        self.counts: list[bool] = []
        self.counted_at: list[float] = []
        ask, claim, count = worker.scheduled.next, worker.scheduled.claim, worker.scheduled.due

        async def asking(limit: int, queues: list[str] | None = None) -> Any:
            got = await ask(limit, queues)
            self.asks.append(len(got))
            return got

        async def claiming(limit: int, queues: list[str] | None, **how: Any) -> Any:
            got = await claim(limit, queues, **how)
            if got is not None:  # None: the server lacks our route, and next() asks
                self.asks.append(len(got))
            return got

        async def counting(queues: list[str] | None) -> bool:
            self.counted_at.append(time.monotonic())
            due = await count(queues)
            self.counts.append(due)
            return due

        worker.scheduled.next = asking  # type: ignore[method-assign]
        worker.scheduled.claim = claiming  # type: ignore[method-assign]
        worker.scheduled.due = counting  # type: ignore[method-assign]


@pytest.mark.parametrize("route", ["claim route", "Prefect's ask"])
def test_an_idle_worker_counts_due_runs_and_asks_only_when_one_is_due(
    live: LiveStack, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    service = JobService()
    service.pause()  # the stack's own worker claims nothing meanwhile
    job_id = service.submit([make_record(f"polling {uuid.uuid4().hex[:8]}")])[0]

    async def scenario() -> None:
        worker = StableNewWorker(work_pool_name=POOL, name=f"poll-{uuid.uuid4().hex[:8]}")
        worker_with_gate = StableNewWorker(
            work_pool_name=POOL, name=f"poll-{uuid.uuid4().hex[:8]}", lookahead=4
        )
        seen = Recorded(worker_with_gate)
        if route != "claim route":
            # A path no server has stands for a Prefect server without our claim route.
            monkeypatch.setattr(scheduled_runs, "CLAIM_ROUTE", "/stablenew/absent/claim")
        async with worker, worker_with_gate:
            # The queued job is due in "normal", not in the queues that outrank it.
            assert await worker.scheduled.due(None) is True
            assert await worker.scheduled.due(["urgent", "high"]) is False

            # Paused: the GPU worker learns it from the pool and asks for nothing.
            for _ in range(3):
                assert await worker_with_gate.get_and_submit_flow_runs() == []
            assert seen.asks == []

            await service.acancel(job_id)
            await service.aset_paused(False)
            await asyncio.sleep(worker_module.POOL_READ_SECONDS + 0.1)
            seen.counts.clear()
            seen.counted_at.clear()
            # Nothing due: one ask keeps the queues ready, then only counts, and at most
            # every IDLE_COUNT_SECONDS however often it polls (15 polls in five rounds: one
            # count a round, two where a round's polls outlast IDLE_COUNT_SECONDS).
            for _ in range(5):
                await asyncio.sleep(worker_module.IDLE_COUNT_SECONDS)
                for _ in range(3):
                    assert await worker_with_gate.get_and_submit_flow_runs() == []
            assert seen.asks == [0]
            assert len(seen.counts) >= 4
            assert seen.counts == [False] * len(seen.counts)
            apart = [b - a for a, b in zip(seen.counted_at, seen.counted_at[1:], strict=False)]
            assert min(apart) >= worker_module.IDLE_COUNT_SECONDS, apart

            # Once READY_POLL_SECONDS have passed it asks again, due or not.
            monkeypatch.setattr(scheduled_runs, "READY_POLL_SECONDS", 0.0)
            await asyncio.sleep(worker_module.IDLE_COUNT_SECONDS)
            assert await worker_with_gate.get_and_submit_flow_runs() == []
            assert seen.asks == [0, 0]
            assert worker_with_gate.scheduled.can_claim is (route == "claim route")

    before = gpu_gate.installed()  # a GPU worker installs its gate for this process's flows
    try:
        asyncio.run(scenario())
    finally:
        gpu_gate.install(before)
        service.resume()


@pytest.mark.parametrize("route", ["look route", "Prefect's reads"])
def test_a_recent_look_stands_in_for_the_count_and_the_pool_read(
    live: LiveStack, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """With runs in flight the cancel watch looks at the pool twice a second; on our server
    that read also brings the pause flag and the runs due, so the worker neither counts nor
    reads the pool while it is recent."""
    service = JobService()
    service.pause()
    record = make_record(f"look {uuid.uuid4().hex[:8]}")
    [run] = asyncio.run(service.asubmit_runs([record]))

    async def scenario() -> None:
        worker = StableNewWorker(
            work_pool_name=POOL, name=f"look-{uuid.uuid4().hex[:8]}", lookahead=2
        )
        if route != "look route":
            monkeypatch.setattr(scheduled_runs, "LOOK_ROUTE", "/stablenew/absent/look")
        async with worker:
            assert worker.gate is not None
            asked: list[str] = []
            count, read_pool = worker.client.count_flow_runs, worker.client.read_work_pool

            async def counting(**filters: Any) -> int:
                asked.append("count")
                return await count(**filters)

            async def reading_pool(name: str) -> Any:
                asked.append("pool")
                return await read_pool(name)

            monkeypatch.setattr(worker.client, "count_flow_runs", counting)
            monkeypatch.setattr(worker.client, "read_work_pool", reading_pool)

            looked = await worker.scheduled.look([run.id])
            assert (looked is not None) is (route == "look route")
            if looked is not None:
                assert [r.id for r in looked] == [run.id]  # SCHEDULED: neither claimed nor run
            # Due in "normal", not in the queues that outrank it; the pool is paused.
            assert await worker.scheduled.due(None) is True
            assert await worker.scheduled.due(["urgent", "high"]) is False
            assert await worker._paused(worker.gate, time.monotonic()) is True
            if route == "look route":
                assert asked == []
                # Once the look is stale the worker counts and reads the pool again.
                await asyncio.sleep(worker_module.POOL_READ_SECONDS + 0.1)
                assert await worker.scheduled.due(None) is True
                assert await worker._paused(worker.gate, time.monotonic()) is True
                assert asked == ["count", "pool"]
            else:
                assert asked == ["count", "count", "pool"]
            assert worker.scheduled.can_look is (route == "look route")

    before = gpu_gate.installed()
    try:
        asyncio.run(scenario())
    finally:
        gpu_gate.install(before)
        service.cancel(record.job_id)
        service.resume()


class _Asks:
    """Stands for the worker's ``scheduled``: records each claim (how many, which queues)."""

    can_claim = True

    def __init__(self, due: int | None) -> None:
        self.claims: list[tuple[int, list[str] | None]] = []
        self.due = due

    def ready_poll_due(self, now: float) -> bool:
        return False

    def due_seen(self) -> int | None:
        return self.due

    async def worth_asking(self, queues: list[str] | None = None) -> bool:
        return True

    async def claim(self, limit: int, queues: list[str] | None, **how: Any) -> list[Any]:
        self.claims.append((limit, queues))
        return []


@pytest.mark.parametrize(
    ("lookahead", "in_flight", "due", "claimed"),
    [
        (4, 5, 50, [(1, ["urgent", "high"])]),  # full: only a priority jump
        # A slot freed with three runs still staged waits for a second: only a run that
        # outranks the staged ones takes it meanwhile, as when full.
        (4, 4, 50, [(1, ["urgent", "high"])]),
        (4, 3, 50, [(2, None)]),  # two free: both in one claim
        (4, 1, 50, [(4, None)]),
        (2, 2, 50, [(1, None)]),  # one staged only: no waiting for a pair
        (1, 1, 50, [(1, None)]),
        # Near the end of the queue (or with no recent look) a freed slot is filled at once.
        (4, 4, 9, [(1, None)]),
        (4, 4, None, [(1, None)]),
    ],
)
def test_a_worker_with_runs_staged_claims_two_at_a_time(
    monkeypatch: pytest.MonkeyPatch,
    lookahead: int,
    in_flight: int,
    due: int | None,
    claimed: list[tuple[int, list[str] | None]],
) -> None:
    """An ask for two costs the server ~47 ms of CPU, for one ~32 (PAIR_WHEN_STAGED): a
    worker whose lookahead still holds two staged runs or more claims only once two slots
    are free, while the runs due (``due``, as its last look saw them) are plenty.
    ``in_flight`` counts the generating run: the others are staged, all in "normal"."""
    import anyio

    from stablenew.orchestration.worker.gpu_worker import QUEUE_PRIORITY

    async def scenario() -> list[tuple[int, list[str] | None]]:
        worker = StableNewWorker(work_pool_name=POOL, name="pairs", lookahead=lookahead)
        assert worker.gate is not None
        worker._limiter = anyio.CapacityLimiter(lookahead + 2)
        asks = _Asks(due)
        worker.scheduled = asks  # type: ignore[assignment]

        async def not_paused(*_: Any) -> bool:
            return False

        monkeypatch.setattr(worker, "_paused", not_paused)
        runs = [uuid.uuid4() for _ in range(in_flight)]
        for run_id in runs:
            worker._limiter.acquire_on_behalf_of_nowait(run_id)
            worker._submitting_flow_run_ids.add(run_id)  # held, not stale
        worker.gate._holder = runs[0]
        for run_id in runs[1:]:
            worker.gate.expect(run_id, (QUEUE_PRIORITY["normal"], datetime.now(UTC)))
        await worker._claim_for_gpu(worker.gate)
        return asks.claims

    before = gpu_gate.installed()
    try:
        assert asyncio.run(scenario()) == claimed
    finally:
        gpu_gate.install(before)
