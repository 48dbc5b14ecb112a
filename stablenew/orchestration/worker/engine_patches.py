"""What Prefect's flow engine does per run that an in-process worker does once, or not at all.

Installed by ``stablenew worker`` only (its process runs every flow of its GPU in threads).
Measured with ``bench/overhead.py --jobs 150 --seconds-per-image 0.5`` and ``py-spy`` on
the worker: per run, Prefect built three API clients (the engine's, the result-storage
lookup's, the suspension observer's), and every client loads the CA bundle into a new TLS
context, about 13-16 ms of CPU each; a third of the worker's CPU went there. Each patch is
guarded by ``tests/orchestration/test_engine_patches.py``, which fails when a Prefect upgrade
moves what it replaces.

- **One TLS context per process.** A context is read-only once built and safe to share
  between clients and threads; Prefect's client builds one per instance.
- **No suspension observer per run.** The engine starts, for every run of a deployment, a
  thread with its own event loop, API client and events websocket, to notice the run being
  suspended from outside. The worker's cancel watch already reads every run in flight that
  is not RUNNING: a suspended run is taken back (it stops without writing a state).
- **The server's default result storage read once per process**, not once per run (each
  read also built a client). A changed server default reaches a worker when it restarts.
"""

from __future__ import annotations

import contextlib
import ssl
import threading
import types
from collections.abc import Iterator
from typing import Any
from uuid import UUID

import prefect.client.orchestration as prefect_client_module
import prefect.flow_engine as prefect_flow_engine
import prefect.results as prefect_results

_installed = False
_install_lock = threading.Lock()


class _SharedTls(types.ModuleType):
    """``ssl`` as Prefect's client module sees it: ``create_default_context`` returns one
    context per set of arguments. Prefect sets ``verify_mode``/``check_hostname`` only on a
    context it asked for without arguments (its "skip verify" setting), so no context is
    handed out in two configurations."""

    def __init__(self) -> None:
        super().__init__("ssl")
        self._contexts: dict[tuple[Any, ...], ssl.SSLContext] = {}
        self._lock = threading.Lock()

    def __getattr__(self, name: str) -> Any:
        return getattr(ssl, name)

    def create_default_context(self, *args: Any, **kwargs: Any) -> ssl.SSLContext:
        key = (args, tuple(sorted(kwargs.items())))
        with self._lock:
            context = self._contexts.get(key)
            if context is None:
                context = self._contexts[key] = ssl.create_default_context(*args, **kwargs)
        return context


@contextlib.contextmanager
def _no_suspension_observer(*_args: Any, **_kwargs: Any) -> Iterator[None]:
    yield


_STORAGE_UNREAD = object()
_storage_block_id: object = _STORAGE_UNREAD
_storage_lock = threading.Lock()  # the read builds a client: not under the TLS cache's lock


def _server_default_storage_once() -> UUID | None:
    global _storage_block_id
    with _storage_lock:
        if _storage_block_id is _STORAGE_UNREAD:
            _storage_block_id = _read_storage_block_id()
        return _storage_block_id  # type: ignore[return-value]


_read_storage_block_id = prefect_results._read_server_default_result_storage_block_id


def install() -> None:
    """Apply the patches to this process (idempotent)."""
    global _installed
    with _install_lock:
        if _installed:
            return
        _installed = True
    setattr(prefect_client_module, "ssl", _SharedTls())  # noqa: B010 - typed as a module
    setattr(prefect_flow_engine, "observe_flow_run_suspension", _no_suspension_observer)  # noqa: B010
    prefect_results._read_server_default_result_storage_block_id = _server_default_storage_once
