"""The embedded default: a local Prefect server (SQLite), the WebUI simulator and one worker.

Everything binds to 127.0.0.1 and lives under the data dir (``STABLENEW_HOME``). What this
module starts it records in ``<home>/stack.json`` so ``stablenew down`` (or the end of
``stablenew run``) stops exactly that, and a stack left up with ``--keep`` is reused.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass, field
from pathlib import Path

import httpx

from stablenew.errors import OrchestrationError

STATE_FILE = "stack.json"
SERVER_START_TIMEOUT = 120.0
SIM_START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _healthy(url: str, timeout: float = 2.0) -> bool:
    try:
        return httpx.get(url, timeout=timeout).status_code == 200
    except httpx.HTTPError:
        return False


def wait_until(
    check: Callable[[], bool], *, timeout: float, what: str, proc: subprocess.Popen[bytes] | None
) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if check():
            return
        if proc is not None and proc.poll() is not None:
            raise OrchestrationError(f"{what} exited early with code {proc.returncode}")
        time.sleep(0.2)
    raise OrchestrationError(f"{what} did not become ready within {timeout:.0f}s")


def _python(*args: str) -> list[str]:
    """argv running a module with this interpreter (never whatever is first on PATH)."""
    return [sys.executable, "-m", *args]


def prefect_server_env(home: Path) -> dict[str, str]:
    """Environment for a local Prefect server whose database lives under ``home``."""
    prefect_home = (home / "prefect").resolve()
    prefect_home.mkdir(parents=True, exist_ok=True)
    return {
        "PREFECT_HOME": str(prefect_home),
        "PREFECT_API_DATABASE_CONNECTION_URL": f"sqlite+aiosqlite:///{prefect_home}/prefect.db",
        "PREFECT_SERVER_ANALYTICS_ENABLED": "false",
        # With a backlog, the late-runs service marks waiting runs one write each and
        # floods SQLite with lock errors; lateness is not a signal we use.
        "PREFECT_SERVER_SERVICES_LATE_RUNS_ENABLED": "false",
        # Services the embedded stack never uses; each event they evaluate costs CPU that
        # on a small machine is taken from the job pipeline.
        "PREFECT_SERVER_SERVICES_TRIGGERS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_PAUSE_EXPIRATIONS_ENABLED": "false",
        "PREFECT_SERVER_SERVICES_REPOSSESSOR_ENABLED": "false",
        "PREFECT_SERVER_LOGGING_LEVEL": "WARNING",
        # Events are written at the persister's flush interval (5 s) in one transaction
        # rather than every 20: each write transaction is one more contender for SQLite's
        # lock. With 20, a 200-job submit's events were being written while the idle worker
        # claimed its first run, which then reached RUNNING 0.9-1.6 s after the submit
        # began; with 1000, 0.54-0.58 s.
        "PREFECT_SERVER_SERVICES_EVENT_PERSISTER_BATCH_SIZE": "1000",
    }


def client_env(api_url: str) -> dict[str, str]:
    return {
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
        # The embedded server does not enforce CSRF (Prefect's default); without this every
        # new client, one per flow run in the worker, first fetches a token it never needs.
        "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false",
        # The embedded server asks for a retry after 0.25 s when SQLite is locked (see
        # prefect_server.py) instead of the client's 2, 4, 8, 16, 32 s; this many tries keep
        # about the same patience (~30 s) for a lock that lasts.
        "PREFECT_CLIENT_MAX_RETRIES": "120",
    }


@dataclass
class Stack:
    """What is running (and what we started) for one data dir."""

    home: Path
    prefect_url: str | None = None  # ".../api"
    webui_url: str | None = None
    pids: dict[str, int] = field(default_factory=dict)

    @property
    def ui_url(self) -> str | None:
        return self.prefect_url.removesuffix("/api") if self.prefect_url else None

    @property
    def logs(self) -> Path:
        path = self.home / "logs"
        path.mkdir(parents=True, exist_ok=True)
        return path

    # -- persistence ------------------------------------------------------------------------

    def save(self) -> None:
        data = asdict(self)
        data["home"] = str(self.home)
        (self.home / STATE_FILE).write_text(json.dumps(data, indent=2))

    @classmethod
    def load(cls, home: Path) -> Stack | None:
        path = home / STATE_FILE
        if not path.is_file():
            return None
        data = json.loads(path.read_text())
        stack = cls(
            home=home,
            prefect_url=data.get("prefect_url"),
            webui_url=data.get("webui_url"),
            pids={k: int(v) for k, v in data.get("pids", {}).items()},
        )
        alive = {k: v for k, v in stack.pids.items() if _alive(v)}
        if not alive:
            path.unlink(missing_ok=True)
            return None
        stack.pids = alive
        return stack

    # -- components -------------------------------------------------------------------------

    def _spawn(self, name: str, argv: list[str], env: dict[str, str]) -> subprocess.Popen[bytes]:
        log = open(self.logs / f"{name}.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            env={**os.environ, **env},
            start_new_session=True,  # its own process group: stopped as a whole
        )
        log.close()
        self.pids[name] = proc.pid
        self.save()
        return proc

    def start(self, *, prefect: bool, simulator: bool, sim_args: list[str] | None = None) -> None:
        """Start the Prefect server and/or the simulator in parallel, then wait for both."""
        waits: list[tuple[Callable[[], bool], str, subprocess.Popen[bytes], float]] = []
        if prefect:
            port = free_port()
            self.prefect_url = f"http://127.0.0.1:{port}/api"
            proc = self._spawn(
                "prefect-server",
                _python(
                    "stablenew.orchestration.prefect_server",
                    *("server", "start", "--host", "127.0.0.1", "--port", str(port)),
                ),
                prefect_server_env(self.home),
            )
            health = f"{self.prefect_url}/health"
            waits.append((lambda: _healthy(health), "prefect-server", proc, SERVER_START_TIMEOUT))
        if simulator:
            port = free_port()
            self.webui_url = f"http://127.0.0.1:{port}"
            proc = self._spawn(
                "webui-sim",
                _python(
                    "stablenew",
                    "webui-sim",
                    "--host",
                    "127.0.0.1",
                    "--port",
                    str(port),
                    *(sim_args or []),
                ),
                {},
            )
            ready = f"{self.webui_url}/sdapi/v1/progress"
            waits.append((lambda: _healthy(ready), "webui-sim", proc, SIM_START_TIMEOUT))
        self.save()
        for check, name, proc, timeout in waits:
            log = self.logs / f"{name}.log"
            wait_until(check, timeout=timeout, what=f"{name} (log: {log})", proc=proc)

    def start_worker(
        self, *, name: str = "embedded-gpu-0", extra_env: dict[str, str] | None = None
    ) -> None:
        if not self.prefect_url or not self.webui_url:
            raise OrchestrationError("start the Prefect server and the WebUI before the worker")
        self._spawn(
            "worker",
            _python("stablenew", "worker", "--webui", self.webui_url, "--name", name, "--control"),
            {
                **client_env(self.prefect_url),
                "STABLENEW_HOME": str(self.home.resolve()),
                **(extra_env or {}),
            },
        )

    def stop(self) -> list[str]:
        """Stop everything this stack started, newest first; returns what was stopped."""
        stopped: list[str] = []
        for name in reversed(list(self.pids)):
            if _terminate(self.pids[name]):
                stopped.append(name)
        self.pids.clear()
        (self.home / STATE_FILE).unlink(missing_ok=True)
        return stopped


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return True


def _terminate(pid: int, timeout: float = 15.0) -> bool:
    """SIGTERM the process group, then SIGKILL if it lingers. True if it was running."""
    if not _alive(pid):
        return False
    try:
        os.killpg(pid, signal.SIGTERM)
    except ProcessLookupError:
        return False
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            done, _ = os.waitpid(pid, os.WNOHANG)
        except ChildProcessError:
            done = 0 if _alive(pid) else pid
        if done or not _alive(pid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pid, signal.SIGKILL)
    return True
