"""Run Prefect's own server (``prefect server start ...``) with three fixes for SQLite stalls.

    python -m stablenew.orchestration.server.prefect_server server start --host 127.0.0.1 --port N

The embedded stack starts its server this way. The arguments are Prefect's CLI, unchanged.
The three fixes: cursors are closed when a statement fails (below), a 503 for a locked
database carries a short ``Retry-After`` (see :func:`retry_soon_when_locked`), and the frequent
writes that read before they write take SQLite's write lock first (see
:func:`write_at_once_where_read_then_write`). The server
also gets routes of ours: a faster bulk creation of flow runs (see ``bulk_route``),
cancelling many runs in one transaction (see ``cancel_route``), a worker's claim of its
next runs and its start of one, each in one request (see ``claim_route``), what a
worker with runs in flight polls for, in one read (see ``look_route``), and what changed
for a follower of runs, lean (see ``changes_route``).

The first stall (measured on the bench before the fix: whole-server freezes of 60-120 s,
several per few hundred jobs): SQLAlchemy 2.0's aiosqlite adapter leaves its cursor open when
a statement raises (for instance "database is locked"). The cursor is then held by the
exception's traceback, in a reference cycle, so the cyclic garbage collector frees it later,
on whichever thread it runs: usually the event loop's. Freeing a sqlite3 cursor resets its
statement, which takes the connection's mutex; if that connection is meanwhile waiting in
SQLite's busy handler (Prefect sets a 60 s busy timeout) for a write lock held by a
transaction whose coroutine needs the event loop, nothing moves until the busy timeout
expires. ``py-spy dump --native`` of a frozen server shows exactly that: the main thread in
``gc_collect_main -> cursor_dealloc -> sqlite3_reset -> pthread_mutex_lock``. SQLAlchemy 2.1
keeps the cursor on the adapter and closes it there, but Prefect 3.8.8's scheduler does not
work with 2.1 (see constraints.txt), so the 2.0 adapter gets the same behaviour here: the
cursor is closed on the connection's own thread, error or not.
"""

from __future__ import annotations

import contextlib
import contextvars
import re
import sys
from collections import deque
from collections.abc import Callable
from typing import Any

import sqlalchemy
from fastapi import Request
from fastapi.responses import JSONResponse
from sqlalchemy.dialects.sqlite import aiosqlite as sa_aiosqlite
from starlette.types import ASGIApp, Receive, Scope, Send

_CURSOR = sa_aiosqlite.AsyncAdapt_aiosqlite_cursor
_ORIGINAL_EXECUTE = _CURSOR.execute
_ORIGINAL_EXECUTEMANY = _CURSOR.executemany


def _execute(self: Any, operation: Any, parameters: Any = None) -> Any:
    if self.server_side:  # a streaming cursor stays open by design
        return _ORIGINAL_EXECUTE(self, operation, parameters)

    def work(cursor: Any) -> None:
        if parameters is None:
            self.await_(cursor.execute(operation))
        else:
            self.await_(cursor.execute(operation, parameters))
        if cursor.description:
            self.description = cursor.description
            self.lastrowid = self.rowcount = -1
            self._rows = deque(self.await_(cursor.fetchall()))
        else:
            self.description = None
            self.lastrowid = cursor.lastrowid
            self.rowcount = cursor.rowcount

    _on_own_cursor(self, work)


def _executemany(self: Any, operation: Any, seq_of_parameters: Any) -> Any:
    if self.server_side:
        return _ORIGINAL_EXECUTEMANY(self, operation, seq_of_parameters)

    def work(cursor: Any) -> None:
        self.await_(cursor.executemany(operation, seq_of_parameters))
        self.description = None
        self.lastrowid = cursor.lastrowid
        self.rowcount = cursor.rowcount

    _on_own_cursor(self, work)


def _on_own_cursor(adapter: Any, work: Callable[[Any], None]) -> None:
    """Run ``work`` on a fresh aiosqlite cursor and close it on its thread, error or not
    (the 2.0 adapter's own code closes it only on success)."""
    try:
        cursor = adapter.await_(adapter._connection.cursor())
    except Exception as error:
        adapter._adapt_connection._handle_exception(error)
    try:
        work(cursor)
    except Exception as error:
        _close_quietly(adapter, cursor)
        adapter._adapt_connection._handle_exception(error)
    adapter.await_(cursor.close())


def _close_quietly(adapter: Any, cursor: Any) -> None:
    with contextlib.suppress(Exception):  # the statement's own error is the one to report
        adapter.await_(cursor.close())


def close_cursors_on_error() -> bool:
    """Patch SQLAlchemy 2.0's aiosqlite cursor; returns whether it applied.

    Only the version this was written against is patched (2.1 has its own fix), and
    server-side (streaming) cursors keep the original code.
    """
    if not sqlalchemy.__version__.startswith("2.0."):
        return False
    _CURSOR.execute = _execute  # type: ignore[method-assign]
    _CURSOR.executemany = _executemany  # type: ignore[method-assign]
    return True


# A write that loses a race for SQLite's lock in WAL mode fails at once (SQLITE_BUSY_SNAPSHOT)
# and Prefect answers 503; its client then waits 2**n s (2, 4, 8, ... plus jitter) unless
# the answer carries Retry-After. The conflict is usually gone within milliseconds, but those
# seconds were the GPU's longest idle gaps on the bench (4-5 s each, every ~25 s of work).
LOCKED_RETRY_AFTER_SECONDS = "0.25"


def retry_soon_when_locked() -> None:
    """Give Prefect's 503 for a locked SQLite database a short ``Retry-After``."""
    from prefect.server.api import server as api_server

    original = api_server.custom_internal_exception_handler

    async def handler(request: Request, exc: Exception) -> JSONResponse:
        response = await original(request, exc)
        if response.status_code == 503 and api_server.is_client_retryable_exception(exc):
            response.headers["Retry-After"] = LOCKED_RETRY_AFTER_SECONDS
        return response

    # create_app() looks the handler up when it builds the app, which happens after this.
    api_server.custom_internal_exception_handler = handler


# Prefect begins these writes DEFERRED: they read (the run's labels, the variable, the
# worker's row, the pool or queue) and then write, and in WAL mode a write committed in
# between makes the upgrade to a write lock fail at once (SQLITE_BUSY_SNAPSHOT; SQLite's busy
# timeout does not apply), answered 503 and retried. Each job makes one label and one variable
# write: on the bench 0.26 and 0.62 of them per job failed so, and the label write is on the
# way from a claim to the run's start; a heartbeat that fails so makes a worker look dead.
# A pool or queue update (pause, resume, priorities) lost six such races in a row to the
# writes of a pack being cancelled, and the user's command failed with the 503. Begun
# IMMEDIATE (as Prefect's own state writes are), they wait for the lock instead.
_READ_THEN_WRITE = {
    "PATCH": re.compile(
        r"/(flow_runs/[^/]+/labels|variables/name/[^/]+"
        r"|work_pools/[^/]+(/queues/[^/]+)?|work_queues/[^/]+)$"
    ),
    "POST": re.compile(r"/work_pools/[^/]+/workers/heartbeat$"),
}
_write_at_once: contextvars.ContextVar[bool] = contextvars.ContextVar(
    "stablenew_write_at_once", default=False
)


class _WriteAtOnce:
    """ASGI middleware: marks the request as one whose transaction begins IMMEDIATE."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        paths = _READ_THEN_WRITE.get(scope.get("method", "")) if scope["type"] == "http" else None
        if paths is None or not paths.search(scope["path"]):
            await self.app(scope, receive, send)
            return
        token = _write_at_once.set(True)
        try:
            await self.app(scope, receive, send)
        finally:
            _write_at_once.reset(token)


def write_at_once_where_read_then_write() -> None:
    """Begin the transactions of the label, variable, worker heartbeat, pool and queue writes
    IMMEDIATE on SQLite."""
    from prefect.server.api import server as api_server
    from prefect.server.database.configurations import AioSqliteConfiguration

    begin = AioSqliteConfiguration.begin_transaction

    def begin_transaction(self: Any, session: Any, with_for_update: bool = False) -> Any:
        return begin(self, session, with_for_update or _write_at_once.get())

    AioSqliteConfiguration.begin_transaction = begin_transaction  # type: ignore[method-assign]

    create_api_app = api_server.create_api_app

    def create_api_app_marking_writes(*args: Any, **kwargs: Any) -> Any:
        app = create_api_app(*args, **kwargs)
        app.add_middleware(_WriteAtOnce)
        return app

    # create_app() calls create_api_app() by its module-level name when it builds the app.
    api_server.create_api_app = create_api_app_marking_writes


def add_our_routes() -> None:
    """Serve :mod:`stablenew.orchestration.server.bulk_route`,
    :mod:`stablenew.orchestration.server.cancel_route`,
    :mod:`stablenew.orchestration.server.claim_route`,
    :mod:`stablenew.orchestration.server.look_route`,
    :mod:`stablenew.orchestration.server.changes_route` and
    :mod:`stablenew.orchestration.server.finish_route` beside Prefect's own routes."""
    from prefect.server.api import server as api_server

    from stablenew.orchestration.server import (
        bulk_route,
        cancel_route,
        changes_route,
        claim_route,
        finish_route,
        look_route,
    )

    # create_api_app() includes every router of this tuple when it builds the app.
    api_server.API_ROUTERS = (  # type: ignore[assignment]
        *api_server.API_ROUTERS,
        bulk_route.router,
        cancel_route.router,
        claim_route.router,
        look_route.router,
        changes_route.router,
        finish_route.router,
    )


def main(argv: list[str] | None = None) -> None:
    close_cursors_on_error()
    retry_soon_when_locked()
    write_at_once_where_read_then_write()
    add_our_routes()
    from prefect.cli import app

    sys.argv = [sys.argv[0], *(sys.argv[1:] if argv is None else argv)]
    app()


if __name__ == "__main__":
    main()
