"""The embedded default: a local Prefect server (SQLite), the WebUI simulator and one worker.

Everything binds to 127.0.0.1 and lives under the data dir (``STABLENEW_HOME``). What this
module starts it records in ``<home>/stack.json`` so ``stablenew down`` (or the end of
``stablenew run``) stops exactly that, and a stack left up with ``--keep`` is reused. Every
process it starts also carries the data dir in its environment (``STABLENEW_STACK_HOME``), so
``down`` finds and stops them even when the state file was lost.
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
from stablenew.redact import redact_url, split_credentials

STATE_FILE = "stack.json"
STACK_MARKER = "STABLENEW_STACK_HOME"
SERVER_START_TIMEOUT = 120.0
SIM_START_TIMEOUT = 60.0


def free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def healthy(url: str, timeout: float = 2.0) -> bool:
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


def prefect_server_env(home: Path, port: int) -> dict[str, str]:
    """Environment for a local Prefect server on ``port`` whose database lives under ``home``."""
    prefect_home = (home / "prefect").resolve()
    prefect_home.mkdir(parents=True, exist_ok=True)
    api_url = f"http://127.0.0.1:{port}/api"
    return {
        "PREFECT_HOME": str(prefect_home),
        # The UI asks /ui-settings where the API is; Prefect answers from these settings, not
        # from the --port it was started with (default 4200), and a PREFECT_API_URL inherited
        # from the user's shell would point the UI at some other server.
        "PREFECT_API_URL": api_url,
        "PREFECT_UI_API_URL": api_url,
        "PREFECT_SERVER_API_HOST": "127.0.0.1",
        "PREFECT_SERVER_API_PORT": str(port),
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


# Tries of a request the embedded server answered 503 (a locked database), each after its
# Retry-After of 0.25 s: ~30 s of patience, near Prefect's default (5 tries, 2 to 32 s apart)
# that the short Retry-After would cut to ~1.5 s.
EMBEDDED_CLIENT_RETRIES = "120"


def client_env(api_url: str) -> dict[str, str]:
    return {
        "PREFECT_API_URL": api_url,
        "PREFECT_SERVER_EPHEMERAL_ENABLED": "false",
        # The embedded server does not enforce CSRF (Prefect's default); without this every
        # new client, one per flow run in the worker, first fetches a token it never needs.
        "PREFECT_CLIENT_CSRF_SUPPORT_ENABLED": "false",
        # See EMBEDDED_CLIENT_RETRIES and prefect_server.retry_soon_when_locked.
        "PREFECT_CLIENT_MAX_RETRIES": EMBEDDED_CLIENT_RETRIES,
    }


@dataclass
class Stack:
    """What is running (and what we started) for one data dir."""

    home: Path
    prefect_url: str | None = None  # ".../api"
    webui_url: str | None = None
    pids: dict[str, int] = field(default_factory=dict)
    # False for a stack started beside one the state file already describes (a `run` against
    # another PREFECT_API_URL): it must neither overwrite nor remove that file.
    owns_state: bool = True

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
        if not self.owns_state:
            return
        data = asdict(self)
        data["home"] = str(self.home)
        # For finding the stack again; a WebUI's credentials stay with the user's settings.
        data["webui_url"] = redact_url(self.webui_url) if self.webui_url else None
        del data["owns_state"]
        tmp = self.home / f"{STATE_FILE}.part"
        tmp.write_text(json.dumps(data, indent=2))
        tmp.replace(self.home / STATE_FILE)

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
        alive = {k: v for k, v in stack.pids.items() if _started_for(v, home)}
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
            env={**os.environ, **env, STACK_MARKER: str(self.home.resolve())},
            start_new_session=True,  # its own process group: stopped as a whole
        )
        log.close()
        self.pids[name] = proc.pid
        self.save()
        return proc

    def start(
        self,
        *,
        prefect: bool,
        simulator: bool,
        sim_args: list[str] | None = None,
        server_env: dict[str, str] | None = None,
    ) -> None:
        """Start the Prefect server and/or the simulator in parallel, then wait for both.
        ``server_env`` overrides the server's settings (a bench's census logs requests)."""
        waits: list[tuple[Callable[[], bool], str, subprocess.Popen[bytes], float]] = []
        if prefect:
            port = free_port()
            self.prefect_url = f"http://127.0.0.1:{port}/api"
            proc = self._spawn(
                "prefect-server",
                _python(
                    "stablenew.orchestration.server.prefect_server",
                    *("server", "start", "--host", "127.0.0.1", "--port", str(port)),
                ),
                {**prefect_server_env(self.home, port), **(server_env or {})},
            )
            health = f"{self.prefect_url}/health"
            waits.append((lambda: healthy(health), "prefect-server", proc, SERVER_START_TIMEOUT))
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
            waits.append((lambda: healthy(ready), "webui-sim", proc, SIM_START_TIMEOUT))
        self.save()
        for check, name, proc, timeout in waits:
            log = self.logs / f"{name}.log"
            wait_until(check, timeout=timeout, what=f"{name} (log: {log})", proc=proc)

    def start_worker(
        self, *, name: str = "embedded-gpu-0", extra_env: dict[str, str] | None = None
    ) -> None:
        if not self.prefect_url or not self.webui_url:
            raise OrchestrationError("start the Prefect server and the WebUI before the worker")
        # Credentials in the URL go to the worker through its environment, not its command
        # line (which every local user can read).
        url, credentials = split_credentials(self.webui_url)
        auth = (
            {
                "STABLENEW_WEBUI__USERNAME": credentials[0],
                "STABLENEW_WEBUI__PASSWORD": credentials[1],
            }
            if credentials
            else {}
        )
        self._spawn(
            "worker",
            _python("stablenew", "worker", "--webui", url, "--name", name, "--control"),
            {
                **client_env(self.prefect_url),
                "STABLENEW_HOME": str(self.home.resolve()),
                **auth,
                **(extra_env or {}),
            },
        )

    def start_gallery(self, extra_env: dict[str, str] | None = None) -> None:
        """Serve the outputs read-only on loopback (the Prefect UI's artifacts show images
        from it); it announces its URL in the data dir. Not waited for: nothing needs it to
        start a job."""
        self._spawn(
            "gallery",
            _python("stablenew", "gallery", "--serve", "--port", str(free_port()), "--no-open"),
            {"STABLENEW_HOME": str(self.home.resolve()), **(extra_env or {})},
        )

    def stop_one(self, name: str) -> bool:
        """Stop one component (e.g. ``worker``) and forget it; True if it was running."""
        pid = self.pids.pop(name, None)
        if pid is None:
            return False
        stopped = _started_for(pid, self.home) and _terminate_group(pid)
        self.save()
        return stopped

    def stop(self, *, strays: bool = False) -> list[str]:
        """Stop everything this stack started, newest first; returns what was stopped.

        With ``strays``, also every other process started for this data dir (found by its
        environment), for a stack whose state file was lost or overwritten.
        """
        stopped: list[str] = []
        for name in reversed(list(self.pids)):
            pid = self.pids[name]
            if _started_for(pid, self.home) and _terminate_group(pid):
                stopped.append(name)
            else:
                _group_alive(pid)  # reap it if it was our child and exited on its own
        if strays:
            for pgid in sorted(marked_groups(self.home)):
                if _terminate_group(pgid):
                    stopped.append(f"process group {pgid}")
        self.pids.clear()
        if self.owns_state:
            (self.home / STATE_FILE).unlink(missing_ok=True)
        return stopped


def marked_groups(home: Path) -> set[int]:
    """Process groups of the processes started for ``home``, found by the marker in their
    environment (Linux: /proc; elsewhere none). A child outlives a killed parent in its group,
    so groups are stopped, not pids."""
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        return set()
    wanted = f"{STACK_MARKER}={home.resolve()}".encode()
    groups: set[int] = set()
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            if wanted in (entry / "environ").read_bytes().split(b"\0"):
                groups.add(os.getpgid(int(entry.name)))
        except OSError:  # gone meanwhile, or not ours to read
            continue
    groups.discard(os.getpgid(0))  # never the caller's own group
    return groups


def _group_alive(pgid: int) -> bool:
    with contextlib.suppress(ChildProcessError):
        while os.waitpid(-pgid, os.WNOHANG)[0]:  # reap our own exited children
            pass
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # pragma: no cover - someone else's process
        return True
    return _has_live_member(pgid)


def _has_live_member(pgid: int) -> bool:
    """Whether a process of group ``pgid`` is more than a zombie. A stack started by an
    earlier command is not our child: its exited processes wait for init to reap them, which
    some inits do only every few seconds (2 s here, per process stopped)."""
    proc = Path("/proc")
    if not proc.is_dir():  # pragma: no cover - not Linux
        return True
    for entry in proc.iterdir():
        if not entry.name.isdigit():
            continue
        try:
            # "pid (comm) state ppid pgrp ...": comm may hold spaces and parentheses.
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except (OSError, IndexError):
            continue  # gone meanwhile
        if len(fields) > 2 and fields[2] == str(pgid) and fields[0] != "Z":
            return True
    return False


def _terminate_group(pgid: int, timeout: float = 15.0) -> bool:
    """SIGTERM a process group, then SIGKILL what lingers. True if anything was running."""
    if not _group_alive(pgid):
        return False
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGTERM)
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if not _group_alive(pgid):
            return True
        time.sleep(0.1)
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, signal.SIGKILL)
    return True


def _started_for(pid: int, home: Path) -> bool:
    """Whether ``pid`` runs and is one we started for ``home`` (a recorded pid may have been
    reused by an unrelated process since)."""
    environ = Path(f"/proc/{pid}/environ")
    if Path("/proc").is_dir():
        try:
            return f"{STACK_MARKER}={home.resolve()}".encode() in environ.read_bytes().split(b"\0")
        except OSError:
            return False
    try:  # pragma: no cover - not Linux: trust the state file
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True
