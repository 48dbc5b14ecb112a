"""WebUI faults while jobs are claimed, on a real Prefect server, worker and simulator process:

* the simulator is killed and started again on the same port ~15 s later: no job fails, each
  job is generated once (simulator counts of both lives), the wait shows as the runs' state
  ``Waiting for WebUI`` and in their logs, and Prefect's attempt count stays 1;
* a generation hangs past the worker's read timeout: the worker interrupts the WebUI before
  retrying (nothing queues behind the hung job), and at most one generation is extra.

A stack of its own (the shared one's simulator must not be killed), stopped at the end.
"""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.filters import LogFilter, LogFilterFlowRunId
from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.server.embedded import Stack, free_port, healthy
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.tags import WAITED
from tests.orchestration.conftest import make_record, wait_for

pytestmark = pytest.mark.slow

READ_TIMEOUT = 3.0
OUTAGE_SECONDS = 15.0


class SimProcess:
    """``stablenew webui-sim`` as a process of its own group, restartable on the same port."""

    def __init__(self, logs: Path, *args: str) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self._logs = logs
        self._args = args
        self._proc: subprocess.Popen[bytes] | None = None
        self.lives = 0

    def start(self) -> None:
        self.lives += 1
        with open(self._logs / f"webui-sim-{self.lives}.log", "ab") as log:
            self._proc = subprocess.Popen(
                [
                    sys.executable,
                    "-m",
                    "stablenew",
                    "webui-sim",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(self.port),
                    *self._args,
                ],
                stdout=log,
                stderr=subprocess.STDOUT,
                stdin=subprocess.DEVNULL,
                start_new_session=True,
            )
        wait_for(
            lambda: healthy(f"{self.url}/sdapi/v1/progress"),
            timeout=60,
            what="the simulator to answer",
        )

    def kill(self) -> None:
        """SIGKILL, as a crash: no answer for what is in flight."""
        if self._proc is not None and self._proc.poll() is None:
            os.killpg(self._proc.pid, signal.SIGKILL)
            self._proc.wait(10)
        self._proc = None

    def sim(self, method: str, path: str, **body: Any) -> Any:
        url = f"{self.url}/stablenew-sim/v1/{path}"
        resp = httpx.request(method, url, json=body or None, timeout=10)
        resp.raise_for_status()
        return resp.json()


@dataclass
class FaultStack:
    stack: Stack
    sim: SimProcess
    output_root: Path


@pytest.fixture(scope="module")
def fault_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[FaultStack]:
    home = tmp_path_factory.mktemp("stablenew-faults")
    stack = Stack(home=home)
    sim = SimProcess(stack.logs, "--seconds-per-step", "0.01")
    try:
        stack.start(prefect=True, simulator=False)
        sim.start()
        stack.webui_url = sim.url
        assert stack.prefect_url
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}):
            from stablenew.orchestration.services.deployments import apply

            async def deploy() -> None:
                async with prefect_client() as client:
                    await apply(client)

            asyncio.run(deploy())
            stack.start_worker(
                name="faults-gpu-0",
                extra_env={
                    "STABLENEW_OUTPUT_ROOT": str(home / "outputs"),
                    "STABLENEW_WEBUI__READ_TIMEOUT": str(READ_TIMEOUT),
                    "STABLENEW_WEBUI__OUTAGE_TIMEOUT": "90",
                },
            )
            warm = make_record("faults warm-up", pack_id="warmup")
            service = JobService()
            service.submit([warm])
            wait_for(
                lambda: service.status(warm.job_id).status.is_terminal,
                timeout=120,
                what="the warm-up job",
            )
            yield FaultStack(stack, sim, home / "outputs")
    finally:
        sim.kill()
        stack.stop()


@pytest.fixture
def faults(fault_stack: FaultStack) -> Iterator[FaultStack]:
    with temporary_settings(updates={PREFECT_API_URL: fault_stack.stack.prefect_url}):
        fault_stack.sim.sim("POST", "reset")
        yield fault_stack
        service = JobService()
        service.cancel_pack("itest")
        fault_stack.sim.sim("POST", "reset")


def _wait_terminal(service: JobService, job_ids: list[str], timeout: float) -> dict[str, JobStatus]:
    def done() -> dict[str, JobStatus] | None:
        statuses = {j: service.status(j).status for j in job_ids}
        return statuses if all(s.is_terminal for s in statuses.values()) else None

    return wait_for(done, timeout=timeout, what=f"{len(job_ids)} job(s) to finish")  # type: ignore[no-any-return]


def _generated(stats: dict[str, Any]) -> Counter[str]:
    return Counter(e["prompt"] for e in stats["events"] if e["images"])


RunSeen = tuple[int, list[str], str, list[str]]


async def _states_and_logs(flow_run_ids: list[str]) -> dict[str, RunSeen]:
    """Per run: Prefect's run_count, its state names, all its log text, its tags."""
    out: dict[str, RunSeen] = {}
    async with prefect_client() as client:
        for run_id in flow_run_ids:
            run = await client.read_flow_run(run_id)  # type: ignore[arg-type]
            states = await client.read_flow_run_states(run_id)  # type: ignore[arg-type]
            logs = await client.read_logs(
                log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run.id]))
            )
            text = "\n".join(log.message for log in logs)
            out[run_id] = (run.run_count, [s.name or "" for s in states], text, run.tags)
    return out


def test_webui_restart_while_jobs_are_claimed_fails_none(faults: FaultStack) -> None:
    service = JobService()
    faults.sim.sim("POST", "timing", seconds_per_image=1.0)
    records = [make_record(f"outage {i}") for i in range(7)]
    ids = service.submit(records)

    # One job generating and the worker's lookahead claimed behind it.
    def claimed_now() -> list[str]:
        state = service.queue_state()
        return [j.job_id for j in [*state.generating, *state.staged]]

    wait_for(
        lambda: faults.sim.sim("GET", "stats")["events"] and len(claimed_now()) >= 3,
        timeout=60,
        what="a job generated and others claimed",
    )
    claimed = claimed_now()
    before = faults.sim.sim("GET", "stats")
    faults.sim.kill()
    down_at = time.monotonic()
    time.sleep(OUTAGE_SECONDS)
    failed_meanwhile = [j for j in ids if service.status(j).status == JobStatus.FAILED]
    faults.sim.start()
    print(
        f"\nWebUI down {time.monotonic() - down_at:.1f}s with {len(claimed)} job(s) claimed; "
        f"{len(failed_meanwhile)} failed meanwhile"
    )
    faults.sim.sim("POST", "timing", seconds_per_image=0.2)
    statuses = _wait_terminal(service, ids, timeout=90)
    after = faults.sim.sim("GET", "stats")

    assert Counter(statuses.values()) == {JobStatus.COMPLETED: len(ids)}
    generated = _generated(before) + _generated(after)
    print(f"generations: {sum(generated.values())} for {len(ids)} jobs: {dict(generated)}")
    assert max(generated.values()) == 1, generated  # none generated twice
    # A generation may end between the stats read and the kill (answer delivered or not):
    # at most that one is not in the counts.
    assert sum(generated.values()) >= len(ids) - 1

    runs = [service.status(j).flow_run_id for j in claimed]

    def seen() -> dict[str, RunSeen] | None:
        found = asyncio.run(_states_and_logs([r for r in runs if r]))
        waited = [v for v in found.values() if "Waiting for WebUI" in v[1]]
        return found if waited and all("Waiting for WebUI" in v[2] for v in waited) else None

    found = wait_for(seen, timeout=20, what="the wait in the runs' states and logs")
    for run_count, names, text, tags in found.values():
        assert run_count == 1  # waiting is not another attempt
        if "Waiting for WebUI" in names:
            assert names[names.index("Waiting for WebUI") + 1] == "Running"
            assert faults.sim.url in text
            assert WAITED in tags  # the history exporter reads its state history


def test_hang_past_the_read_timeout_interrupts_before_retrying(faults: FaultStack) -> None:
    service = JobService()
    faults.sim.sim("POST", "faults", hang_seconds=20)
    rec = make_record("hangs once")
    service.submit([rec])
    wait_for(
        lambda: faults.sim.sim("GET", "stats")["counters"]["interrupts"] >= 1,
        timeout=25,
        what="the worker to interrupt the hung generation",
    )
    faults.sim.sim("POST", "faults", hang_seconds=0)
    final = _wait_terminal(service, [rec.job_id], timeout=60)[rec.job_id]
    wait_for(lambda: not faults.sim.sim("GET", "stats")["busy"], timeout=30, what="idle WebUI")
    stats = faults.sim.sim("GET", "stats")
    events = sorted(stats["events"], key=lambda e: e["start"])
    generated = sum(1 for e in events if e["images"])
    needed = 1 if final == JobStatus.COMPLETED else 0
    print(
        f"\nhang: {final.value}, {len(events)} request(s) ran, {generated} generation(s), "
        f"{stats['counters']['interrupts']} interrupt(s)"
    )
    assert final in (JobStatus.COMPLETED, JobStatus.FAILED)
    assert stats["counters"]["interrupts"] >= 1
    assert generated - needed <= 1
    # No request piled up behind the hung one: each began only once the one before ended,
    # and every interrupted one made no image.
    assert all(e["images"] == 0 for e in events if e["interrupted"])
    assert max(stats["queued"], 0) == 0
