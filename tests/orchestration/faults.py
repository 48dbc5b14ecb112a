"""Fault injection for the crash tests and ``bench/faults.py``: a Prefect server of their own
(workers are killed here, so never the shared stack's), simulators and worker processes that
can be killed, each on 127.0.0.1 free ports and stopped by whoever started them.

``postgres_fault_lab`` is the same lab with the Prefect server on PostgreSQL (a throwaway
server and a fresh database, see ``tests/orchestration/postgres.py``), for the multi-worker
test and ``bench/scaleout.py``."""

from __future__ import annotations

import asyncio
import os
import signal
import subprocess
import sys
import time
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.server.embedded import (
    Stack,
    client_env,
    free_port,
    healthy,
    prefect_server_env,
    wait_until,
)
from tests.orchestration.postgres import Postgres, postgres_server

# Fast failure detection for tests: a heartbeat a second, dead after four missed.
FAST_WORKER_ENV = {
    "STABLENEW_WORKER__HEARTBEAT_SECONDS": "1",
    "STABLENEW_WORKER__DEAD_AFTER": "4",
    "STABLENEW_WORKER__STOP_GRACE": "20",
}


@dataclass
class Sim:
    url: str
    proc: subprocess.Popen[bytes]
    port: int

    def call(self, method: str, path: str, **body: Any) -> Any:
        resp = httpx.request(
            method, f"{self.url}/stablenew-sim/v1/{path}", json=body or None, timeout=10
        )
        resp.raise_for_status()
        return resp.json()

    def generations(self) -> Counter[str]:
        """Generations per prompt (every one that held the simulator's lock, interrupted
        ones included)."""
        return Counter(e["prompt"] for e in self.call("GET", "stats")["events"])

    def cut_short(self) -> Counter[str]:
        """Generations per prompt that were interrupted."""
        events = self.call("GET", "stats")["events"]
        return Counter(e["prompt"] for e in events if e["interrupted"])

    def busy(self) -> bool:
        return bool(self.call("GET", "stats")["busy"])


@dataclass
class FaultLab:
    """A Prefect server (with the deployments) of its own; simulators and workers on demand."""

    stack: Stack
    home: Path
    procs: list[subprocess.Popen[bytes]] = field(default_factory=list)
    # Added to the server's environment (e.g. its database URL) wherever the lab starts it.
    server_env: dict[str, str] = field(default_factory=dict)
    postgres: Postgres | None = None

    @property
    def api(self) -> str:
        assert self.stack.prefect_url
        return self.stack.prefect_url

    def start_sim(
        self, seconds_per_image: float, port: int | None = None, args: Sequence[str] = ()
    ) -> Sim:
        """A simulator; ``args`` are more ``stablenew webui-sim`` options."""
        port = port or free_port()
        argv = [sys.executable, "-m", "stablenew", "webui-sim", "--host", "127.0.0.1"]
        argv += ["--port", str(port), "--seconds-per-image", str(seconds_per_image), *args]
        proc = self._spawn("sim", argv, {})
        url = f"http://127.0.0.1:{port}"
        wait_until(lambda: healthy(f"{url}/sdapi/v1/progress"), timeout=60, what="sim", proc=proc)
        return Sim(url, proc, port)

    def restart_sim(self, sim: Sim, down_seconds: float, seconds_per_image: float) -> Sim:
        """Kill the simulator (what it was generating is lost) and start it again on the same
        port after ``down_seconds``; its counts start from zero."""
        kill(sim.proc, signal.SIGKILL)
        time.sleep(down_seconds)
        return self.start_sim(seconds_per_image, port=sim.port)

    def start_worker(
        self,
        name: str,
        webui: str,
        *,
        lookahead: int = 4,
        env: dict[str, str] | None = None,
        cwd: Path | None = None,
    ) -> subprocess.Popen[bytes]:
        argv = [sys.executable, "-m", "stablenew", "worker", "--webui", webui]
        argv += ["--name", name, "--lookahead", str(lookahead)]
        return self._spawn(
            f"worker-{name}",
            argv,
            {
                **client_env(self.api),
                "STABLENEW_HOME": str(self.home),
                **FAST_WORKER_ENV,
                **(env or {}),
            },
            cwd=cwd,
        )

    def _spawn(
        self, name: str, argv: list[str], env: dict[str, str], cwd: Path | None = None
    ) -> subprocess.Popen[bytes]:
        log = open(self.home / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,
            cwd=cwd,
        )
        log.close()
        self.procs.append(proc)
        return proc

    def kill_server(self) -> None:
        """SIGKILL the Prefect server (its database stays)."""
        pid = self.stack.pids.pop("prefect-server")
        os.killpg(pid, signal.SIGKILL)
        deadline = time.monotonic() + 10
        while healthy(f"{self.api}/health") and time.monotonic() < deadline:
            time.sleep(0.1)

    def restart_server(self) -> None:
        """The same server again: same port, same database."""
        port = int(self.api.rsplit(":", 1)[1].split("/")[0])
        argv = [sys.executable, "-m", "stablenew.orchestration.server.prefect_server", "server"]
        argv += ["start", "--host", "127.0.0.1", "--port", str(port)]
        env = {**prefect_server_env(self.home, port), **self.server_env}
        # The stack's, not the lab's: the lab's processes die after each test, the server
        # lives as long as the lab.
        proc = self.stack._spawn("prefect-server", argv, env)
        wait_until(lambda: healthy(f"{self.api}/health"), timeout=120, what="server", proc=proc)

    def start_server(self) -> None:
        """Our Prefect server on a free port with ``server_env`` (what ``Stack.start`` does,
        with the lab's database); ``stack.stop()`` stops it."""
        port = free_port()
        self.stack.prefect_url = f"http://127.0.0.1:{port}/api"
        argv = [sys.executable, "-m", "stablenew.orchestration.server.prefect_server", "server"]
        argv += ["start", "--host", "127.0.0.1", "--port", str(port)]
        env = {**prefect_server_env(self.home, port), **self.server_env}
        proc = self.stack._spawn("prefect-server", argv, env)
        log = self.stack.logs / "prefect-server.log"
        wait_until(
            lambda: healthy(f"{self.api}/health"), timeout=180, what=f"server ({log})", proc=proc
        )

    def log(self, name: str) -> str:
        path = self.home / f"{name}.log"
        return path.read_text(errors="replace") if path.exists() else ""

    def worker_log_tails(self, lines: int = 25) -> str:
        """The last lines of each worker's log that say more than "this job ran"."""
        routine = (
            "submitting flow run",
            "GPU to run",
            "Beginning flow",
            "wrote ",
            "in state Completed",
        )
        tails = []
        for path in sorted(self.home.glob("worker-*.log")):
            text = path.read_text(errors="replace").splitlines()
            kept = [line for line in text if not any(r in line for r in routine)]
            tails.append(f"--- {path.name}:\n" + "\n".join(kept[-lines:]))
        return "\n".join(tails)

    def wait_settled(self, pack_id: str, jobs: int, timeout: float, what: str) -> None:
        """:func:`settled`, waited for; a timeout says which runs are left and what the
        workers logged last (all a CI run keeps of a failure)."""
        try:
            wait(lambda: settled(pack_id, jobs), timeout, what)
        except AssertionError as exc:
            left = unsettled(pack_id)
            raise AssertionError(f"{exc}\n{left}\n{self.worker_log_tails()}") from None

    def stop_all(self) -> None:
        for proc in self.procs:
            kill(proc, signal.SIGKILL)
        self.procs.clear()


def kill(proc: subprocess.Popen[bytes], sig: int) -> None:
    """Signal the process's whole group (a worker runs flows in threads, not children, but
    the simulator's server may fork)."""
    if proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, sig)
    except ProcessLookupError:
        return
    if sig == signal.SIGKILL:
        proc.wait(timeout=10)


@contextmanager
def fault_lab(home: Path) -> Iterator[FaultLab]:
    stack = Stack(home=home)
    lab = FaultLab(stack, home)
    try:
        stack.start(prefect=True, simulator=False)
        assert stack.prefect_url
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}):
            from stablenew.orchestration.services.deployments import apply

            async def deploy() -> None:
                async with prefect_client() as client:
                    await apply(client)

            asyncio.run(deploy())
            yield lab
    finally:
        lab.stop_all()
        stack.stop()


@contextmanager
def postgres_fault_lab(home: Path, *, durable: bool = False) -> Iterator[FaultLab]:
    """:func:`fault_lab` with the Prefect server on PostgreSQL: a PostgreSQL server of its own
    (``durable=False``: no fsync, for tests) and a fresh database, our server wrapper on it,
    the deployments applied; every process stopped and the database removed at the end."""
    with postgres_server(durable=durable) as pg:
        url = pg.create_database("prefect")
        lab = FaultLab(
            Stack(home=home), home, server_env={"PREFECT_API_DATABASE_CONNECTION_URL": url}
        )
        lab.postgres = pg
        try:
            lab.start_server()
            with temporary_settings(updates={PREFECT_API_URL: lab.api}):
                from stablenew.orchestration.services.deployments import apply

                async def deploy() -> None:
                    async with prefect_client() as client:
                        await apply(client)

                asyncio.run(deploy())
                yield lab
        finally:
            lab.stop_all()
            lab.stack.stop()


async def pack_runs(pack_id: str) -> list[FlowRun]:
    runs: list[FlowRun] = []
    async with prefect_client() as client:
        while True:
            page = await client.read_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"pack:{pack_id}"])),
                sort=FlowRunSort.ID_DESC,
                limit=200,
                offset=len(runs),
            )
            runs.extend(page)
            if len(page) < 200:
                return runs


def runs_of(pack_id: str) -> list[FlowRun]:
    return asyncio.run(pack_runs(pack_id))


def states(pack_id: str) -> Counter[str]:
    return Counter(r.state.type.value if r.state else "NONE" for r in runs_of(pack_id))


def settled(pack_id: str, jobs: int) -> bool:
    """Every job of the pack has a COMPLETED run and no run is left active or queued."""
    runs = runs_of(pack_id)
    active = {StateType.SCHEDULED, StateType.PENDING, StateType.RUNNING, StateType.CANCELLING}
    if any(r.state is None or r.state.type in active for r in runs):
        return False
    return len(_completed_jobs(runs)) == jobs


def unsettled(pack_id: str) -> str:
    """The pack's runs that keep it from being settled, one line each."""
    from stablenew.orchestration.worker.recovery import claimant

    runs = runs_of(pack_id)
    done = _completed_jobs(runs)
    lines = []
    for r in runs:
        job = r.parameters["record"]["job_id"]
        if r.state is None or not (r.state.is_final() and job in done):
            state = f"{r.state.type.value} {r.state.name!r}" if r.state else "no state"
            message = (r.state.message or "")[:120] if r.state else ""
            lines.append(
                f"run {r.id} job {job[-10:]}: {state} by {claimant(r)} "
                f"since {r.state.timestamp if r.state else '-'}: {message}"
            )
    return f"{len(lines)} run(s) left:\n" + "\n".join(lines)


def _completed_jobs(runs: Sequence[FlowRun]) -> set[str]:
    return {r.parameters["record"]["job_id"] for r in runs if r.state and r.state.is_completed()}


def completions_per_job(pack_id: str) -> Counter[str]:
    return Counter(
        r.parameters["record"]["job_id"]
        for r in runs_of(pack_id)
        if r.state is not None and r.state.is_completed()
    )


def wait(check: Callable[[], Any], timeout: float, what: str, interval: float = 0.3) -> Any:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}")
