"""A strictly first-in-first-out lock, like A1111's ``modules/fifo_lock.FIFOLock``.

A1111 serializes generation, extras and model loads behind one such lock, so requests run in
arrival order. This one hands the lock over by ticket, so a newcomer can never overtake a
waiting thread (A1111's version has a small window where it can).
"""

from __future__ import annotations

import threading
from types import TracebackType


class FIFOLock:
    def __init__(self) -> None:
        self._cond = threading.Condition()
        self._next_ticket = 0
        self._serving = 0

    def acquire(self) -> None:
        with self._cond:
            ticket = self._next_ticket
            self._next_ticket += 1
            self._cond.wait_for(lambda: self._serving == ticket)

    def release(self) -> None:
        with self._cond:
            self._serving += 1
            self._cond.notify_all()

    @property
    def waiting(self) -> int:
        """Threads queued behind the holder (0 when free or only held)."""
        with self._cond:
            return max(0, self._next_ticket - self._serving - 1)

    def __enter__(self) -> FIFOLock:
        self.acquire()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.release()
