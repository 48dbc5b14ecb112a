"""The embedded server's SQLite fixes: a statement that fails closes its cursor at once, and
a locked database answers 503 with a short Retry-After.

Left open, the cursor is freed later by the garbage collector on the event loop's thread,
where it can block on the connection's mutex for SQLite's whole busy timeout (60 s in
Prefect); see stablenew/orchestration/server/prefect_server.py.
"""

from __future__ import annotations

import asyncio
import sqlite3
from pathlib import Path

import aiosqlite
import pytest
from sqlalchemy.exc import OperationalError
from sqlalchemy.ext.asyncio import create_async_engine
from starlette.requests import Request

from stablenew.orchestration.server import prefect_server


def _cursors_closed_by_a_failing_statement(db: Path, monkeypatch: pytest.MonkeyPatch) -> int:
    closed: list[object] = []
    original = aiosqlite.Cursor.close

    async def counting_close(self: aiosqlite.Cursor) -> None:
        closed.append(self)
        await original(self)

    monkeypatch.setattr(aiosqlite.Cursor, "close", counting_close)

    async def go() -> int:
        engine = create_async_engine(f"sqlite+aiosqlite:///{db}")
        try:
            async with engine.connect() as conn:
                await conn.exec_driver_sql("select 1")
                before = len(closed)
                with pytest.raises(OperationalError, match="no such table"):
                    await conn.exec_driver_sql("insert into missing_table values (1)")
                return len(closed) - before
        finally:
            await engine.dispose()

    return asyncio.run(go())


@pytest.fixture
def restore_cursor_class(monkeypatch: pytest.MonkeyPatch) -> None:
    cursor = prefect_server._CURSOR
    monkeypatch.setattr(cursor, "execute", cursor.execute)
    monkeypatch.setattr(cursor, "executemany", cursor.executemany)


@pytest.mark.usefixtures("restore_cursor_class")
def test_unpatched_adapter_leaves_the_cursor_open(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # The control: what the fix is for still happens with the stock adapter.
    assert _cursors_closed_by_a_failing_statement(tmp_path / "a.db", monkeypatch) == 0


@pytest.mark.usefixtures("restore_cursor_class")
def test_patched_adapter_closes_the_cursor_of_a_failed_statement(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    assert prefect_server.close_cursors_on_error()
    assert _cursors_closed_by_a_failing_statement(tmp_path / "b.db", monkeypatch) == 1


@pytest.mark.usefixtures("restore_cursor_class")
def test_patched_adapter_still_reads_and_writes(tmp_path: Path) -> None:
    assert prefect_server.close_cursors_on_error()

    async def go() -> list[tuple[int, str]]:
        engine = create_async_engine(f"sqlite+aiosqlite:///{tmp_path / 'c.db'}")
        try:
            async with engine.begin() as conn:
                await conn.exec_driver_sql("create table t (id integer, name text)")
                await conn.exec_driver_sql(
                    "insert into t values (?, ?)", [(1, "a"), (2, "b")]
                )  # executemany
                result = await conn.exec_driver_sql("select id, name from t order by id")
                return [tuple(row) for row in result]
        finally:
            await engine.dispose()

    assert asyncio.run(go()) == [(1, "a"), (2, "b")]


def test_a_locked_database_answers_503_with_a_short_retry_after(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    from prefect.server.api import server as api_server

    monkeypatch.setattr(
        api_server,
        "custom_internal_exception_handler",
        api_server.custom_internal_exception_handler,
    )
    prefect_server.retry_soon_when_locked()
    handler = api_server.custom_internal_exception_handler
    request = Request({"type": "http", "method": "POST", "path": "/api/x", "headers": []})

    locked = OperationalError("UPDATE ...", {}, sqlite3.OperationalError("database is locked"))
    response = asyncio.run(handler(request, locked))
    assert response.status_code == 503
    assert response.headers["Retry-After"] == prefect_server.LOCKED_RETRY_AFTER_SECONDS

    other = asyncio.run(handler(request, RuntimeError("boom")))
    assert other.status_code == 500
    assert "Retry-After" not in other.headers


@pytest.fixture
def restore_write_mode(monkeypatch: pytest.MonkeyPatch) -> None:
    from prefect.server.api import server as api_server
    from prefect.server.database.configurations import AioSqliteConfiguration

    begin = AioSqliteConfiguration.begin_transaction
    monkeypatch.setattr(AioSqliteConfiguration, "begin_transaction", begin)
    monkeypatch.setattr(api_server, "create_api_app", api_server.create_api_app)


def test_prefect_still_begins_the_read_then_write_routes_deferred() -> None:
    """What :func:`write_at_once_where_read_then_write` relies on; a Prefect upgrade that
    changes it fails here (the fix may then be wrong or no longer needed)."""
    import inspect
    import uuid

    from fastapi.routing import APIRoute
    from prefect.server.api import flow_runs, server, variables, work_queues, workers

    routes = (
        flow_runs.update_flow_run_labels,
        variables.update_variable_by_name,
        workers.worker_heartbeat,
        workers.update_work_pool,
        workers.update_work_queue,
        work_queues.update_work_queue,
    )
    for route in routes:
        assert "session_context(begin_transaction=True)" in inspect.getsource(route)
    assert "create_api_app(" in inspect.getsource(server.create_app)
    # The requests the middleware marks are those routes'.
    for method, path in [
        ("PATCH", f"/flow_runs/{uuid.uuid4()}/labels"),
        ("PATCH", "/variables/name/stablenew-gpu-a"),
        ("POST", "/work_pools/stablenew-gpu/workers/heartbeat"),
        ("PATCH", "/work_pools/stablenew-gpu"),
        ("PATCH", "/work_pools/stablenew-gpu/queues/high"),
        ("PATCH", f"/work_queues/{uuid.uuid4()}"),
    ]:
        assert prefect_server._READ_THEN_WRITE[method].search(path)
        assert any(
            r.path_regex.match(path) and method in r.methods
            for module in (flow_runs, variables, workers, work_queues)
            for r in module.router.routes
            if isinstance(r, APIRoute)
        ), path


@pytest.mark.usefixtures("restore_write_mode")
def test_read_then_write_routes_begin_immediate(tmp_path: Path) -> None:
    from prefect.server.api import server as api_server
    from prefect.server.database.configurations import (
        SQLITE_BEGIN_MODE,
        AioSqliteConfiguration,
    )
    from sqlalchemy.ext.asyncio import AsyncSession

    prefect_server.write_at_once_where_read_then_write()
    config = AioSqliteConfiguration(connection_url=f"sqlite+aiosqlite:///{tmp_path / 'p.db'}")
    seen: dict[str, str | None] = {}

    async def route(scope: object, receive: object, send: object) -> None:
        """Stands for the API app: begins a transaction as a write route does."""
        engine = create_async_engine(config.connection_url)
        try:
            async with AsyncSession(engine) as session, config.begin_transaction(session):
                seen[f"{scope['method']} {scope['path']}"] = SQLITE_BEGIN_MODE.get()  # type: ignore[index]
        finally:
            await engine.dispose()

    app = prefect_server._WriteAtOnce(route)
    for method, path in [
        ("PATCH", "/api/flow_runs/0b8f/labels"),
        ("PATCH", "/api/variables/name/stablenew-gpu-a"),
        ("POST", "/api/work_pools/stablenew-gpu/workers/heartbeat"),
        ("PATCH", "/api/work_pools/stablenew-gpu"),
        ("PATCH", "/api/work_pools/stablenew-gpu/queues/high"),
        ("PATCH", "/api/work_queues/0b8f"),
        ("PATCH", "/api/work_pools/stablenew-gpu/queues/high/extra"),
        ("PATCH", "/api/flow_runs/0b8f"),
        ("POST", "/api/flow_runs/0b8f/set_state"),
    ]:
        asyncio.run(app({"type": "http", "method": method, "path": path}, None, None))  # type: ignore[arg-type]
    assert seen == {
        "PATCH /api/flow_runs/0b8f/labels": "IMMEDIATE",
        "PATCH /api/variables/name/stablenew-gpu-a": "IMMEDIATE",
        "POST /api/work_pools/stablenew-gpu/workers/heartbeat": "IMMEDIATE",
        "PATCH /api/work_pools/stablenew-gpu": "IMMEDIATE",
        "PATCH /api/work_pools/stablenew-gpu/queues/high": "IMMEDIATE",
        "PATCH /api/work_queues/0b8f": "IMMEDIATE",
        "PATCH /api/work_pools/stablenew-gpu/queues/high/extra": "DEFERRED",
        "PATCH /api/flow_runs/0b8f": "DEFERRED",
        "POST /api/flow_runs/0b8f/set_state": "DEFERRED",
    }
    built = api_server.create_api_app()
    assert any(m.cls is prefect_server._WriteAtOnce for m in built.user_middleware)
