"""The GPU gate: one job talks to the WebUI at a time, chosen by priority, handed over at once.

The in-process worker claims a few runs ahead ("lookahead") so their Prefect bookkeeping
(claim, Pending/Running, flow start, preflight) happens while another job renders. Each then
waits here; the holder releases the gate the moment its last WebUI answer arrives, and the
best-ranked waiter sends its request within milliseconds. Ranks are (queue priority, expected
start), so a higher-priority run the worker has just claimed ("expected", still starting up)
is waited for rather than overtaken. While the pool is paused the gate stays shut.

Under Prefect's stock process worker no gate is installed and :func:`hold` does nothing.
"""

from __future__ import annotations

import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import datetime
from uuid import UUID

from prefect.exceptions import Abort

from stablenew.orchestration.worker import cancellation

Rank = tuple[int, datetime]
logger = logging.getLogger("stablenew.gpu")

WAIT_TICK = 0.05
# How long the GPU may sit idle waiting for a claimed, better-ranked run that is still
# starting, before worse-ranked waiters go ahead. Counted from the later of the claim and the
# last release, so time spent rendering other jobs does not use it up; bounded so one start
# stuck behind a slow API call cannot idle the GPU for long.
EXPECT_GRACE_SECONDS = 15.0
# And never for longer than this after its claim: a start stuck this long (or a claim that
# was never withdrawn) must not idle the GPU after every later job.
EXPECT_MAX_SECONDS = 60.0


class GateCancelled(Exception):
    """The waiting run was cancelled before it got the GPU."""


class HandedBack(Abort):
    """The worker is stopping and gives this run back to its queue.

    An :class:`~prefect.exceptions.Abort`, so Prefect's flow engine writes no final state for
    it (it would otherwise mark the run FAILED or CRASHED); the worker puts it back in its
    queue itself. Raised in a run waiting for the GPU, or in the generating one when the
    worker's grace period ran out and the WebUI was interrupted.
    """


class GpuGate:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._holder: UUID | None = None
        self._expected: dict[UUID, tuple[Rank, float]] = {}  # rank, monotonic claim time
        self._released_at = time.monotonic()
        self._ranks: dict[UUID, Rank] = {}  # kept across retries of the same run
        self._waiting: dict[UUID, Rank] = {}
        self._paused = False
        self._handing_back = False  # waiters leave, nobody new gets the GPU
        self._handing_back_holder = False  # the holder's own failure means "handed back"
        # Told (outside the lock) which run has just got the GPU: the worker publishes it,
        # since from outside every run waiting here looks the same (its flow run RUNNING).
        self.on_grant: Callable[[UUID], None] | None = None

    @property
    def holder(self) -> UUID | None:
        with self._cond:
            return self._holder

    def expect(self, run_id: UUID, rank: Rank) -> None:
        """A run was claimed: others of worse rank must not take the GPU before it."""
        with self._cond:
            self._expected[run_id] = (rank, time.monotonic())
            self._ranks[run_id] = rank

    def drop_stale(self, in_flight: Callable[[UUID], bool]) -> list[UUID]:
        """Drop announced runs that are no longer ``in_flight`` (returned). An announcement
        nobody withdraws would hold every release back by ``EXPECT_GRACE_SECONDS``."""
        with self._cond:
            stale = [run_id for run_id in self._expected if not in_flight(run_id)]
            for run_id in stale:
                del self._expected[run_id]
                self._ranks.pop(run_id, None)
            if stale:
                self._cond.notify_all()
            return stale

    def forget(self, run_id: UUID) -> None:
        """The run ended (or never started): drop every trace of it."""
        with self._cond:
            self._expected.pop(run_id, None)
            self._ranks.pop(run_id, None)
            self._waiting.pop(run_id, None)
            if self._holder == run_id:
                self._holder = None
            self._cond.notify_all()

    @property
    def paused(self) -> bool:
        with self._cond:
            return self._paused

    def set_paused(self, paused: bool) -> None:
        with self._cond:
            if paused != self._paused:
                self._paused = paused
                self._cond.notify_all()

    def staged(self) -> dict[UUID, Rank]:
        """Runs claimed but not holding the GPU (waiting or still starting)."""
        with self._cond:
            return {**{k: r for k, (r, _) in self._expected.items()}, **self._waiting}

    def _is_next(self, run_id: UUID, rank: Rank) -> bool:
        now = time.monotonic()
        starting = [
            r
            for r, claimed in self._expected.values()
            if now - max(claimed, self._released_at) < EXPECT_GRACE_SECONDS
            and now - claimed < EXPECT_MAX_SECONDS
        ]
        return all(rank <= other for other in [*self._waiting.values(), *starting])

    @contextmanager
    def hold(self, run_id: UUID, rank: Rank, cancel: threading.Event) -> Iterator[None]:
        """Wait for the GPU (bounded only by cancellation), hold it for the block.

        ``rank`` is used only for a run the worker did not announce with :meth:`expect`.
        """
        asked = time.monotonic()
        with self._cond:
            self._expected.pop(run_id, None)
            rank = self._ranks.get(run_id, rank)
            self._waiting[run_id] = rank
            try:
                while not (
                    self._holder is None and not self._paused and self._is_next(run_id, rank)
                ):
                    if self._handing_back:
                        raise HandedBack(f"run {run_id} handed back: the worker is stopping")
                    cancellation.check_ours(run_id)
                    if cancel.is_set():
                        raise GateCancelled(f"run {run_id} cancelled while waiting for the GPU")
                    self._cond.wait(WAIT_TICK)
            finally:
                self._waiting.pop(run_id, None)
            self._holder = run_id
            logger.info(
                "GPU to run %s (priority %s) after %.3fs; %d waiting",
                run_id, rank[0], time.monotonic() - asked, len(self._waiting),
            )  # fmt: skip
        try:
            if self.on_grant is not None:
                # Publishes the holder and starts the check that the run is still this
                # worker's; it answers while the WebUI generates (see cancellation).
                self.on_grant(run_id)
            cancellation.check_ours(run_id)  # e.g. the worker's loop is already gone
            yield
        except BaseException as exc:
            with self._cond:
                handed_back = self._handing_back_holder
            if not isinstance(exc, cancellation.TakenBack):
                # A generation interrupted because the run was taken back ends as that.
                cancellation.check_ours(run_id)
            if handed_back and not isinstance(exc, (HandedBack, cancellation.TakenBack)):
                # The worker interrupted this generation to stop: whatever the WebUI call
                # raised, the run goes back to its queue rather than failing.
                raise HandedBack(f"run {run_id} handed back: interrupted to stop") from exc
            raise
        finally:
            self.release(run_id)

    def hand_back(self, *, holder: bool = False) -> None:
        """Stop handing out the GPU: every waiting run (and any that arrives) raises
        :class:`HandedBack`. With ``holder``, a failure of the generating run does too (the
        caller is about to interrupt the WebUI)."""
        with self._cond:
            self._handing_back = True
            self._handing_back_holder = self._handing_back_holder or holder
            self._cond.notify_all()

    @property
    def handing_back(self) -> bool:
        with self._cond:
            return self._handing_back

    def release(self, run_id: UUID) -> None:
        """Give the GPU up before the ``hold`` block ends (a no-op unless ``run_id`` holds
        it): the WebUI is done with the job, bookkeeping left need not keep it idle."""
        with self._cond:
            if self._holder == run_id:
                self._holder = None
                self._released_at = time.monotonic()
            self._cond.notify_all()


_installed: GpuGate | None = None
_install_lock = threading.Lock()


def install(gate: GpuGate | None) -> None:
    """Called by the in-process GPU worker; one gate per process (one GPU per worker)."""
    global _installed
    with _install_lock:
        _installed = gate


def installed() -> GpuGate | None:
    with _install_lock:
        return _installed
