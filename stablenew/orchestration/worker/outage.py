"""Riding out Prefect API outages: a worker waits for the API instead of exiting.

Prefect's service loops end a worker after a few failures in a row; a worker that outlives a
server restart is what users of a queue expect. Before the worker has reached the API once, a
failure is still an error (a wrong URL). After an outage a run may have been left unended by
this live worker (its final state or its hand-back could not be written): :attr:`lost_touch`
says so, and the worker then looks for such runs (see ``recovery_duty``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import httpx

T = TypeVar("T")

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


def api_unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the Prefect API is down or failing, not that a request was wrong."""
    if isinstance(exc, httpx.HTTPStatusError):
        return exc.response.status_code >= 500
    return isinstance(exc, httpx.TransportError)


class ApiOutage:
    """Whether the Prefect API is away for one worker, since when, and what it may have cost."""

    def __init__(self, logger: Logger) -> None:
        self._logger = logger
        self._synced_once = False
        self.since: float | None = None
        # A write of this worker may have been lost: look for runs of ours left unended.
        self.lost_touch = False

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    async def through(self, call: Callable[[], Awaitable[T]], default: T) -> T:
        """``call()``, or ``default`` while the API is unreachable or failing (5xx)."""
        try:
            result = await call()
        except Exception as exc:
            if not api_unavailable(exc):
                raise
            error = exc
        else:
            self._synced_once = True
            if self.since is not None:
                self._logger.info("Prefect API back after %.0fs", time.monotonic() - self.since)
                self.since = None
            return result
        if not self._synced_once:
            raise error
        self.lost_touch = True
        if self.since is None:
            self.since = time.monotonic()
            self._logger.warning("Prefect API unreachable (%r); waiting for it", error)
        return default
