"""The pool's recovery as one live worker does it (the rules are in ``recovery``).

- **Its own runs, after a restart or an outage.** Whatever the worker's name still holds when
  it starts is from a previous life on the same GPU, and nothing of it runs here; after an API
  outage a run whose end (or hand-back) the API could not take is held by this live worker,
  which the pool's recovery leaves alone. Both are put right as a dead worker's would be.
- **Its pool's dead workers.** Every ``RECOVERY_SCAN_SECONDS`` the worker looks; the first
  live worker by name acts (see ``recovery.scan``).
"""

from __future__ import annotations

import logging
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from uuid import UUID

import anyio.abc
from prefect.client.orchestration import PrefectClient

from stablenew.orchestration.worker import recovery

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]

RECOVERY_SCAN_SECONDS = 5.0  # how often the pool's first live worker looks for dead ones
ORPHAN_MIN_AGE_SECONDS = 10.0  # a run claimed here this recently may not be tracked yet


@dataclass(frozen=True)
class RecoveryPolicy:
    """When a worker of the pool counts as dead, and what its generating run gets."""

    dead_after: float = 30.0
    retries_on_crash: int = 1


class RecoveryDuty:
    """One worker's part in its pool's recovery."""

    def __init__(
        self,
        policy: RecoveryPolicy,
        *,
        worker_name: str,
        pool_name: str,
        client: Callable[[], PrefectClient],
        holds: Callable[[UUID], bool],
        logger: Logger,
    ) -> None:
        """``holds(run_id)``: whether the worker runs (or is starting) that run."""
        self.policy = policy
        self._name = worker_name
        self._pool = pool_name
        self._client = client
        self._holds = holds
        self._logger = logger
        self._next_scan = 0.0
        self._scanning = False

    async def recover_own(self, why: str, *, min_age: float = 0.0) -> bool:
        """Put right the runs this worker's name holds in Prefect that it does not run (and
        whose state is at least ``min_age`` seconds old), as a dead worker's would be;
        whether none is left (``False``: the API failed, or one was too young to judge)."""
        client = self._client()
        try:
            runs = await recovery.active_runs(client, self._pool)
            now = datetime.now(UTC)
            unheld = [
                (r, (now - r.state.timestamp).total_seconds())
                for r in runs
                if recovery.claimant(r) == self._name
                and not self._holds(r.id)
                and r.state is not None
            ]
            lost = [r for r, age in unheld if age >= min_age]
            await recovery.recover_worker(
                client,
                self._name,
                lost,
                why=why,
                retries_on_crash=self.policy.retries_on_crash,
                logger=self._logger,
            )
        except Exception as exc:  # the API is down: try again at the next poll
            self._logger.warning("could not recover what %s holds (%s): %r", self._name, why, exc)
            return False
        return len(lost) == len(unheld)

    def maybe_scan(self, task_group: anyio.abc.TaskGroup | None) -> None:
        """Start a look for the pool's dead workers when one is due (one at a time)."""
        now = time.monotonic()
        if self._scanning or now < self._next_scan or task_group is None:
            return
        self._next_scan = now + RECOVERY_SCAN_SECONDS
        self._scanning = True
        task_group.start_soon(self._scan)

    async def _scan(self) -> None:
        try:
            await recovery.scan(
                self._client(),
                self._pool,
                self._name,
                dead_after=self.policy.dead_after,
                retries_on_crash=self.policy.retries_on_crash,
                logger=self._logger,
            )
        except Exception as exc:  # transient API trouble: the next scan tries again
            self._logger.warning("recovery scan failed: %r", exc)
        finally:
            self._scanning = False
