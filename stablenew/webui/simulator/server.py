"""Running the simulator: :class:`SimServer` (background thread, for tests and the embedded
default) and :func:`serve` (foreground, for ``stablenew webui-sim``)."""

from __future__ import annotations

import logging
import socket
import threading
import time
from collections.abc import Callable
from types import TracebackType
from typing import Self

import uvicorn

from stablenew.webui.simulator._http import DroppedConnection
from stablenew.webui.simulator.app import create_app
from stablenew.webui.simulator.config import SimConfig
from stablenew.webui.simulator.inventory import load_inventory
from stablenew.webui.simulator.state import SimState


class _QuietDrops(logging.Filter):
    """Injected connection drops are expected: keep their tracebacks out of the log."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        while exc is not None:
            if isinstance(exc, DroppedConnection):
                return False
            exc = exc.__cause__ or exc.__context__
        return True


def _bind(host: str, port: int) -> socket.socket:
    """Bind now (so port 0 resolves), listen later: until then connections are refused,
    like a WebUI still loading its model."""
    sock = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET, socket.SOCK_STREAM)
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    # uvicorn leaves Nagle on for sockets it is handed; responses go out as two writes, so
    # every keep-alive request then waited ~40 ms for the client's delayed ACK. Accepted
    # sockets inherit this option from the listener.
    sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
    sock.bind((host, port))
    sock.set_inheritable(True)
    return sock


class SimServer:
    """The simulator on a background thread: ``with SimServer(SimConfig(port=0)) as sim:``.

    ``url`` is known once :meth:`start` returns (port 0 picks a free one). With
    ``timing.startup_seconds`` the socket is bound at once but accepts connections only after
    the delay; ``start(wait=False)`` returns without waiting for that.
    """

    def __init__(self, config: SimConfig | None = None, *, log_level: str = "warning") -> None:
        self.config = config or SimConfig(port=0)
        self.state = SimState(self.config, load_inventory(self.config.inventory_file))
        self.app = create_app(self.config, state=self.state)
        self._log_level = log_level
        self._server: uvicorn.Server | None = None
        self._thread: threading.Thread | None = None
        self._sock: socket.socket | None = None
        self.port: int | None = None

    @property
    def url(self) -> str:
        if self.port is None:
            raise RuntimeError("SimServer is not started")
        return f"http://{self.config.host}:{self.port}"

    def start(self, *, wait: bool = True, timeout: float = 10.0) -> None:
        if self._thread is not None:
            raise RuntimeError("SimServer is already started")
        self._sock = _bind(self.config.host, self.config.port)
        self.port = int(self._sock.getsockname()[1])
        uv_config = uvicorn.Config(
            self.app,
            log_level=self._log_level,
            access_log=False,
            timeout_graceful_shutdown=2,
            lifespan="off",
        )
        self._server = uvicorn.Server(uv_config)
        self._thread = threading.Thread(
            target=self._run, name=f"webui-sim:{self.port}", daemon=True
        )
        self._thread.start()
        if wait:
            self.wait_started(self.config.timing.startup_seconds + timeout)

    def wait_started(self, timeout: float) -> None:
        deadline = time.monotonic() + timeout
        while not (self._server and self._server.started):
            if time.monotonic() > deadline or not (self._thread and self._thread.is_alive()):
                raise RuntimeError(f"simulator did not start on {self.url}")
            time.sleep(0.01)

    def _run(self) -> None:
        assert self._server is not None
        assert self._sock is not None
        logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
        if self.config.timing.startup_seconds:
            time.sleep(self.config.timing.startup_seconds)
        self._server.run(sockets=[self._sock])

    def stop(self, timeout: float = 10.0) -> None:
        """Stop serving; running jobs end at once (every simulated wait returns)."""
        self.state.close()
        if self._server is not None:
            self._server.should_exit = True
        if self._thread is not None:
            self._thread.join(timeout)
        if self._sock is not None:
            self._sock.close()
        self._thread = self._server = self._sock = None

    def __enter__(self) -> Self:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def serve(config: SimConfig, *, on_bound: Callable[[str], None] | None = None) -> None:
    """Serve in the foreground until interrupted (Ctrl-C); ``on_bound(url)`` once bound."""
    state = SimState(config, load_inventory(config.inventory_file))
    app = create_app(config, state=state)
    sock = _bind(config.host, config.port)
    port = int(sock.getsockname()[1])
    if on_bound is not None:
        on_bound(f"http://{config.host}:{port}")
    logging.getLogger("uvicorn.error").addFilter(_QuietDrops())
    try:
        if config.timing.startup_seconds:
            time.sleep(config.timing.startup_seconds)
        uvicorn.Server(uvicorn.Config(app, log_level="info", lifespan="off")).run(sockets=[sock])
    finally:
        state.close()
        sock.close()
