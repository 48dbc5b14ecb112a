"""Cancelling a pack in one step, on the real stack.

- The embedded server's cancel route (``cancel_route``) does to each run what Prefect's own
  ``set_state`` with a proposed CANCELLING does (runs, states and events compared), and the
  Prefect rules it relies on still hold: a CANCELLING run cannot start (RUNNING refused), a
  CANCELLED one cannot be claimed (PENDING aborted), and a CANCELLED one *can* be started,
  which is why a claimed run is never forced CANCELLED. A Prefect upgrade that changes any
  of this fails here.
- 300 queued jobs are cancelled within a few seconds while 1 or 4 workers (each with its own
  simulator) consume the pack, with our route and with the run-by-run fallback used on a
  server without it (100 jobs there); after the call returns no generation of the pack
  starts, nothing is left active, and every job is either completed (it generated before
  the call) or cancelled.
The figures are printed (``-s``).
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled, Cancelling, Pending, Running

from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client, read_runs_by_id
from stablenew.orchestration.server.embedded import _python, client_env, free_port, healthy
from stablenew.orchestration.services import bulk_cancel
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.queue_view import ACTIVE, pool_runs
from tests.orchestration.conftest import LiveStack, make_record, wait_for

pytestmark = pytest.mark.slow

JOBS = 300
# The run-by-run fallback is checked for its end states only: fewer jobs show the same.
FALLBACK_JOBS = 100
EXTRA_WORKERS = 3
STEP_SECONDS = 0.1  # 4 steps: ~0.45 s per job, so 300 jobs stay queued for minutes
# A regression guard, not the target: the call is one transaction of ~3.5 ms of server CPU
# per run, so its time is the share of 2 cores the server gets next to 4 workers and 4
# simulators (here 2.6-5.0 s; 12.6 s once on a loaded CI machine). Walking run by run took
# 59-126 s. The figure is printed (pytest -s) and is what the 5 s target is judged by.
CANCEL_GUARD_SECONDS = 30.0
# Fields that differ between any two runs by construction.
UNFINISHED = [*ACTIVE, StateType.CANCELLING]
PER_RUN = {"id", "name", "idempotency_key", "created", "updated", "state_id", "state"}
TIMES = {"start_time", "end_time", "expected_start_time", "next_scheduled_start_time"}


def _without(data: dict[str, Any], keys: set[str]) -> dict[str, Any]:
    return {k: v for k, v in data.items() if k not in keys}


def _comparable(run: FlowRun) -> dict[str, Any]:
    data = _without(
        run.model_dump(mode="json"),
        PER_RUN | {"parameters", "estimated_run_time", "estimated_start_time_delta"},
    )
    for key in TIMES:
        data[key] = data[key] is not None
    data["total_run_time"] = data["total_run_time"] > 0
    state = run.state
    assert state is not None
    data["state"] = (state.type, state.name, state.message)
    return data


async def _events(client: PrefectClient, run_id: uuid.UUID, name: str) -> list[dict[str, Any]]:
    body = {
        "filter": {
            "event": {"name": [name]},
            "resource": {"id": [f"prefect.flow-run.{run_id}"]},
        },
        "limit": 5,
    }
    for _ in range(150):  # the event persister writes in batches, every few seconds
        response = await client.request("POST", "/events/filter", json=body)
        events: list[dict[str, Any]] = response.json()["events"]
        if events:
            return events
        await asyncio.sleep(0.2)
    raise AssertionError(f"no {name} event for flow run {run_id}")


async def _to(client: PrefectClient, run_id: uuid.UUID, *states: Any) -> None:
    for state in states:
        result = await client.set_flow_run_state(run_id, state)
        assert result.state is not None, result
        assert result.state.type == state.type, result


def test_the_route_cancels_as_prefects_own_set_state(live: LiveStack) -> None:
    service = JobService()
    service.pause()  # nothing runs these; we play the worker
    token = uuid.uuid4().hex[:8]
    records = [make_record(f"fidelity {token} {i}") for i in range(6)]
    ids = [r.id for r in _submit(service, records)]
    theirs, ours = ids[:3], ids[3:]
    claim = [Pending()]
    start = [Pending(), Running()]

    async def go() -> None:
        async with prefect_client() as client:
            for run_ids in (theirs, ours):
                await _to(client, run_ids[1], *claim)
                await _to(client, run_ids[2], *start)
            for run_id in theirs:
                await client.set_flow_run_state(run_id, Cancelling(message="cancel requested"))
            answered = await bulk_cancel.cancel_matching(client, flow_run_ids=ours)
            assert {r.id for r in answered} == set(ours)
            a = {r.id: r for r in await read_runs_by_id(client, theirs)}
            b = {r.id: r for r in await read_runs_by_id(client, ours)}
            expected = [StateType.CANCELLED, StateType.CANCELLING, StateType.CANCELLING]
            for mine, prefects, state_type in zip(ours, theirs, expected, strict=True):
                assert b[mine].state_type == state_type
                assert _comparable(b[mine]) == _comparable(a[prefects])
                states = [await client.read_flow_run_states(i) for i in (prefects, mine)]
                assert [s.type for s in states[1]] == [s.type for s in states[0]]
                name = f"prefect.flow-run.{b[mine].state_name}"
                events = [(await _events(client, i, name))[0] for i in (prefects, mine)]
                assert events[1]["id"] == str(b[mine].state_id)  # the state's id, as Prefect's
                same = {"event", "payload"}
                assert {k: events[1][k] for k in same} == {k: events[0][k] for k in same}
                related = [sorted(r["prefect.resource.role"] for r in e["related"]) for e in events]
                assert related[1] == related[0]

            # The rules the route relies on, as the installed Prefect applies them.
            scheduled, pending, running = ours
            result = await client.set_flow_run_state(scheduled, Pending())
            assert result.status.value == "ABORT"  # a cancelled run cannot be claimed
            result = await client.set_flow_run_state(pending, Running())
            assert result.status.value == "REJECT"  # a claimed, cancelling run cannot start
            assert result.state is not None
            assert result.state.type == StateType.CANCELLING
            # ... while a CANCELLED one can: never force CANCELLED onto a claimed run.
            await client.set_flow_run_state(theirs[1], Cancelled(), force=True)
            result = await client.set_flow_run_state(theirs[1], Running())
            assert result.status.value == "ACCEPT"
            for run_id in [pending, running, *theirs[1:]]:
                await client.set_flow_run_state(run_id, Cancelled(), force=True)

    asyncio.run(go())


def _submit(service: JobService, records: list[Any]) -> list[FlowRun]:
    return asyncio.run(service.asubmit_runs(records))


# -- 300 jobs, workers consuming ------------------------------------------------------------


def _consume_then_cancel(
    live: LiveStack, webuis: list[str], *, label: str, workers: int, one_step: bool = True
) -> dict[str, Any]:
    """Submit JOBS, let ``workers`` consume them, cancel the pack; check and return figures.
    The run-by-run fallback (not ``one_step``) is only checked for its end states: while it
    walks, workers go on taking runs it has not reached."""
    service = JobService()
    pack = f"cancel-{label}-{uuid.uuid4().hex[:6]}"
    prefix = f"{pack} job"
    for url in webuis:
        _sim(url, "POST", "reset")
        _sim(url, "POST", "timing", seconds_per_step=STEP_SECONDS)
    jobs = JOBS if one_step else FALLBACK_JOBS
    records = [make_record(f"{prefix} {i}", pack_id=pack) for i in range(jobs)]
    service.submit(records)

    def ours(url: str) -> list[dict[str, Any]]:
        return [e for e in _sim(url, "GET", "stats")["events"] if e["prompt"].startswith(prefix)]

    # Every worker generating and its lookahead staged.
    wait_for(
        lambda: all(len(ours(u)) >= 2 for u in webuis),
        timeout=60,
        what=f"{workers} worker(s) to consume the pack",
    )
    started = time.monotonic()
    called_at = time.time()
    refs = service.cancel_pack(pack)
    elapsed = time.monotonic() - started
    returned_at = time.time()

    async def active() -> list[FlowRun]:
        async with prefect_client() as client:
            return await pool_runs(client, service.pool, UNFINISHED, [f"pack:{pack}"])

    left: list[FlowRun] = []

    def ended() -> bool:
        left[:] = asyncio.run(active())
        return not left

    try:
        wait_for(ended, timeout=60, what="the pack's runs to end")
    except AssertionError as e:
        states = sorted(
            f"{r.id} {r.state_name} {r.state.message if r.state else ''} "
            f"worker={(r.labels or {}).get('prefect.worker.name')} runs={r.run_count}"
            for r in left
        )
        raise AssertionError(f"{e}; still {states[:10]}; {_story(live, left[0])}") from None
    runs = asyncio.run(_pack_runs(pack))
    by_state: dict[str, int] = {}
    for run in runs:
        key = run.state_type.value if run.state_type else "none"
        by_state[key] = by_state.get(key, 0) + 1
    events = [e for u in webuis for e in ours(u)]
    late = [e for e in events if e["start"] > returned_at]
    before = [e for e in events if e["start"] <= returned_at]
    figures = {
        "label": label,
        "workers": workers,
        "cancel_seconds": round(elapsed, 2),
        "answered": len(refs),
        "states": by_state,
        "generations_before": len(before),
        "generations_during": sum(1 for e in before if e["start"] > called_at),
        "generations_after": len(late),
    }
    print(f"\ncancel {jobs} jobs ({label}, {workers} worker(s)): {figures}")
    assert len(runs) == jobs
    assert set(by_state) <= {"COMPLETED", "CANCELLED"}, by_state
    assert by_state.get("COMPLETED", 0) <= len(before)
    # What the answer calls cancelled ends CANCELLED (a generating run is never COMPLETED).
    stopped = [r for r in refs if r.status in (JobStatus.CANCELLED, JobStatus.CANCELLING)]
    assert len(stopped) == by_state.get("CANCELLED", 0)
    if one_step:
        # A run left CANCELLING may get its worker's GPU before the cancel watch sees it:
        # the grant's own check (which does not hold the WebUI back) cuts it short.
        whole = [e for e in late if not e["interrupted"]]
        assert whole == [], f"{len(whole)} generation(s) started after cancel returned, uncut"
        assert elapsed <= CANCEL_GUARD_SECONDS, figures
    return figures


def _story(live: LiveStack, run: FlowRun) -> str:
    """A stuck run's states and every log line naming it, for the failure message."""

    async def history() -> list[str]:
        async with prefect_client() as client:
            return [f"{s.name}: {s.message}" for s in await client.read_flow_run_states(run.id)]

    lines = [
        f"{log.name}: {line}"
        for log in sorted(live.stack.logs.glob("*.log"))
        for line in log.read_text(errors="replace").splitlines()
        if str(run.id) in line
    ]
    return f"states {asyncio.run(history())}; logs {lines[-10:]}"


async def _pack_runs(pack: str) -> list[FlowRun]:
    async with prefect_client() as client:
        return await pool_runs(client, JobService().pool, list(StateType), [f"pack:{pack}"])


def _sim(url: str, method: str, path: str, **json: Any) -> Any:
    resp = httpx.request(method, f"{url}/stablenew-sim/v1/{path}", json=json or None, timeout=10)
    resp.raise_for_status()
    return resp.json()


@pytest.fixture
def no_route(monkeypatch: pytest.MonkeyPatch) -> None:
    """A path no server has stands for a Prefect server without our route."""
    monkeypatch.setattr(bulk_cancel, "CANCEL_ROUTE", "/stablenew/absent/cancel")


def test_cancel_300_with_one_worker(live: LiveStack) -> None:
    _consume_then_cancel(live, [live.webui_url], label="route", workers=1)


@pytest.mark.usefixtures("no_route")
def test_cancel_300_with_one_worker_without_our_route(live: LiveStack) -> None:
    _consume_then_cancel(live, [live.webui_url], label="fallback", workers=1, one_step=False)


@pytest.fixture(scope="module")
def more_workers(live_stack: LiveStack) -> Iterator[list[str]]:
    """Three more workers, each with its own simulator (one WebUI per GPU), for this module."""
    stack = live_stack.stack
    assert stack.prefect_url is not None
    names: list[str] = []
    urls: list[str] = []
    try:
        for i in range(EXTRA_WORKERS):
            port = free_port()
            name = f"cancel-sim-{i}"
            sim_argv = ("webui-sim", "--host", "127.0.0.1", "--port", str(port))
            stack._spawn(name, _python("stablenew", *sim_argv, "--seconds-per-image", "0.05"), {})
            names.append(name)
            urls.append(f"http://127.0.0.1:{port}")
        for url in urls:
            wait_for(lambda u=url: healthy(f"{u}/sdapi/v1/progress"), timeout=60, what=url)
        env = {
            **client_env(stack.prefect_url),
            "STABLENEW_HOME": str(stack.home.resolve()),
            "STABLENEW_OUTPUT_ROOT": str(live_stack.output_root),
        }
        for i, url in enumerate(urls):
            name = f"cancel-worker-{i}"
            stack._spawn(name, _python("stablenew", "worker", "--webui", url, "--name", name), env)
            names.append(name)

        async def online() -> int:
            async with prefect_client() as client:
                workers = await client.read_workers_for_work_pool(JobService().pool)
            return sum(1 for w in workers if w.name.startswith("cancel-worker-"))

        with _prefect_at(live_stack):
            wait_for(lambda: asyncio.run(online()) == EXTRA_WORKERS, timeout=90, what="workers")
        yield urls
    finally:
        for name in reversed(names):
            stack.stop_one(name)


def _prefect_at(live: LiveStack) -> Any:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    return temporary_settings(updates={PREFECT_API_URL: live.prefect_url})


def test_cancel_300_with_four_workers(live: LiveStack, more_workers: list[str]) -> None:
    _consume_then_cancel(live, [live.webui_url, *more_workers], label="route", workers=4)


@pytest.mark.usefixtures("no_route")
def test_cancel_300_with_four_workers_without_our_route(
    live: LiveStack, more_workers: list[str]
) -> None:
    _consume_then_cancel(
        live, [live.webui_url, *more_workers], label="fallback", workers=4, one_step=False
    )
