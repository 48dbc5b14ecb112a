"""The Prefect boundary: one place that opens clients and translates connection failures.

Every client is opened against the server :mod:`stablenew.orchestration.server.locate` finds, never
against Prefect's temporary server.
"""

from __future__ import annotations

import os
import time
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any
from uuid import UUID

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.settings import (
    PREFECT_API_URL,
    PREFECT_CLIENT_MAX_RETRIES,
    temporary_settings,
)

from stablenew.errors import PrefectUnavailable
from stablenew.orchestration.server.embedded import EMBEDDED_CLIENT_RETRIES
from stablenew.orchestration.server.locate import cached_prefect
from stablenew.settings import get_settings

PAGE = 200  # the server refuses larger pages


def api_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the Prefect API is down or failing, not that a request was wrong."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


def api_url() -> str:
    return PREFECT_API_URL.value() or "(no PREFECT_API_URL set)"


@asynccontextmanager
async def prefect_client() -> AsyncIterator[PrefectClient]:
    """An async client whose connection errors surface as :class:`PrefectUnavailable`.

    With no ``PREFECT_API_URL`` it talks to the data dir's embedded stack, or raises
    :class:`PrefectUnavailable` saying how to start one.
    """
    if PREFECT_API_URL.value():
        async with _translated_client() as client:
            yield client
        return
    target = cached_prefect(get_settings().home)
    updates: dict[Any, Any] = {PREFECT_API_URL: target.api_url}
    if "PREFECT_CLIENT_MAX_RETRIES" not in os.environ:
        # The embedded server's workers get this patience too (see ``client_env``).
        updates[PREFECT_CLIENT_MAX_RETRIES] = int(EMBEDDED_CLIENT_RETRIES)
    with temporary_settings(updates=updates):
        async with _translated_client() as client:
            yield client


@asynccontextmanager
async def _translated_client() -> AsyncIterator[PrefectClient]:
    try:
        async with get_client() as client:
            yield client
    except (httpx.ConnectError, httpx.ConnectTimeout) as e:
        raise PrefectUnavailable(api_url(), type(e).__name__) from e


async def check_reachable(client: PrefectClient) -> None:
    """Fail fast with the URL tried instead of letting a deep call time out."""
    try:
        failure = await client.api_healthcheck()
    except httpx.HTTPError as e:  # pragma: no cover - api_healthcheck returns errors
        raise PrefectUnavailable(api_url(), str(e)) from e
    if failure is not None:
        raise PrefectUnavailable(api_url(), f"{type(failure).__name__}: {failure}")


async def read_runs_by_id(
    client: PrefectClient,
    ids: Sequence[UUID | str],
    *,
    left_scheduled: bool = False,
    ids_per_query: int = PAGE,
) -> list[FlowRun]:
    """The runs among ``ids`` (with ``left_scheduled``, only those no longer SCHEDULED: a
    waiting run costs nothing to re-check, though each run read carries its whole record),
    ``ids_per_query`` ids per filter, answers paged. Order is the server's."""
    out: list[FlowRun] = []
    wanted = [i if isinstance(i, UUID) else UUID(i) for i in ids]
    for start in range(0, len(wanted), ids_per_query):
        flow_run_filter = FlowRunFilter(
            id=FlowRunFilterId(any_=wanted[start : start + ids_per_query])
        )
        if left_scheduled:
            flow_run_filter.state = FlowRunFilterState(
                type=FlowRunFilterStateType(not_any_=[StateType.SCHEDULED])
            )
        offset = 0
        while True:
            page = await client.read_flow_runs(
                flow_run_filter=flow_run_filter, limit=PAGE, offset=offset
            )
            out.extend(page)
            if len(page) < PAGE:
                break
            offset += PAGE
    return out


def flush_to_prefect(timeout: float) -> bool:
    """Send the events and log lines still queued for the API, for at most ``timeout``
    seconds; whether they all went. Prefect itself drains these queues at interpreter exit
    with no time limit: with the API down (a stopped server), a process would never exit."""
    from prefect.events.worker import EventsWorker
    from prefect.logging.handlers import APILogWorker

    deadline = time.monotonic() + timeout
    for service in (EventsWorker, APILogWorker):
        left = max(0.0, deadline - time.monotonic())
        outcome = service.drain_all(timeout=left)
        if not isinstance(outcome, tuple):  # an awaitable: called inside an event loop
            raise RuntimeError("flush_to_prefect is for a process ending, outside any loop")
        if outcome[1]:
            return False
    return True
