"""Riding out Prefect API outages: a worker waits for the API instead of exiting.

Prefect's service loops end a worker after a few failures in a row; a worker that outlives a
server restart is what users of a queue expect. Before the worker has reached the API once, a
failure is still an error (a wrong URL). After an outage a run may have been left unended by
this live worker (its final state or its hand-back could not be written): :attr:`lost_touch`
says so, and the worker then looks for such runs (see ``recovery_duty``).

Prefect's client retries an unreachable API itself, waiting 2, 4, 8, 16, 32, 64 s... between
tries (and longer after a few 503s: the count is shared). A call begun during an outage may
then sleep for a minute or more after the API is back, and a worker whose poll or whose runs'
state writes sleep so leaves its GPU idle (measured: 20-25 s after a 45 s outage). The calls
that keep the GPU busy are therefore given :data:`API_PATIENCE_SECONDS` per try, then asked
afresh (:func:`steadily`, and ``through(..., patience=...)``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Awaitable, Callable
from typing import TypeVar

import anyio

from stablenew.orchestration._prefect import api_unavailable

T = TypeVar("T")

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

# One try of a call that keeps the GPU busy: a live API answers in milliseconds (a locked
# SQLite database, in well under a second); Prefect's client tries at 0, 2 and 6 s within it.
API_PATIENCE_SECONDS = 10.0


async def steadily(call: Callable[[], Awaitable[T]], patience: float = API_PATIENCE_SECONDS) -> T:
    """``call()``, asked afresh whenever a try goes unanswered for ``patience`` seconds, until
    it answers or raises. Only for calls that may be repeated: a try cut short may have
    reached the server."""
    while True:
        with anyio.move_on_after(patience):
            return await call()


class ApiOutage:
    """Whether the Prefect API is away for one worker, since when, and what it may have cost."""

    def __init__(self, logger: Logger, probe: Callable[[], Awaitable[object]]) -> None:
        """``probe``: a cheap call that always reaches the API."""
        self._logger = logger
        self._probe = probe
        self._synced_once = False
        self.since: float | None = None
        # A write of this worker may have been lost: look for runs of ours left unended.
        self.lost_touch = False

    @property
    def ongoing(self) -> bool:
        return self.since is not None

    async def through(
        self, call: Callable[[], Awaitable[T]], default: T, patience: float | None = None
    ) -> T:
        """``call()``, or ``default`` while the API is unreachable or failing (5xx), or leaves
        the call unanswered for ``patience`` seconds (if given; the call is then cut short).

        During an outage the probe goes first: a call may return without asking the API (a
        poll with nothing due), which says nothing of the API's return."""
        try:
            if self.ongoing:
                await _within(patience, self._probe)
            result = await _within(patience, call)
        except TimeoutError:
            error: Exception = TimeoutError(f"no answer in {patience:g}s")
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


async def _within(patience: float | None, call: Callable[[], Awaitable[T]]) -> T:
    if patience is None:
        return await call()
    with anyio.fail_after(patience):
        return await call()
