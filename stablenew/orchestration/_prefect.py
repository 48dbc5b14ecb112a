"""The Prefect boundary: one place that opens clients and translates connection failures."""

from __future__ import annotations

from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

import httpx
from prefect.client.orchestration import PrefectClient, get_client
from prefect.settings import PREFECT_API_URL

from stablenew.errors import PrefectUnavailable


def api_url() -> str:
    return PREFECT_API_URL.value() or "(ephemeral: no PREFECT_API_URL set)"


@asynccontextmanager
async def prefect_client() -> AsyncIterator[PrefectClient]:
    """An async client whose connection errors surface as :class:`PrefectUnavailable`."""
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
