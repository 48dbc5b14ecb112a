"""Per-flow-run signals shared by the in-process worker and the render flow.

- **Cancel**: the worker's watch sets the run's event when Prefect marks it CANCELLING; the
  flow checks it between and during stages. Under the stock process worker nothing sets it
  (Prefect kills the process instead), which is why a missing event means "never cancelled".
- **Taken back**: the run is no longer this worker's to finish. The pool's recovery put it
  back in its queue or marked it CRASHED (it judged this worker dead: heartbeats that did not
  land), another worker claimed it, or this worker's own loop has died. The flow then stops
  with :class:`TakenBack` and writes nothing: a state written now would overwrite the run of
  whoever holds it (a COMPLETED turned FAILED, a second completion of one job).
"""

from __future__ import annotations

import concurrent.futures
import threading
from uuid import UUID

from prefect.exceptions import Abort

# How long a finished render waits for the worker's confirmation that the run is still its
# own (asked when the run got the GPU; it normally arrives while the WebUI generates).
CONFIRM_SECONDS = 30.0


class TakenBack(Abort):
    """This worker no longer holds the run; the flow ends without writing a state.

    An :class:`~prefect.exceptions.Abort`, so Prefect's engine proposes no final state."""


_lock = threading.Lock()
_events: dict[UUID, threading.Event] = {}
_taken: dict[UUID, str] = {}
_verdicts: dict[UUID, concurrent.futures.Future[None]] = {}


def register(flow_run_id: UUID) -> threading.Event:
    with _lock:
        return _events.setdefault(flow_run_id, threading.Event())


def unregister(flow_run_id: UUID) -> None:
    """The run has left this worker. A check of it still under way answers for nobody: were
    it to take the run back, it would take back the run's next claim here (handed back in
    the meantime, then claimed again)."""
    with _lock:
        _events.pop(flow_run_id, None)
        _taken.pop(flow_run_id, None)
        verdict = _verdicts.pop(flow_run_id, None)
    if verdict is not None:
        verdict.cancel()


def event_for(flow_run_id: UUID | str | None) -> threading.Event:
    """The run's event, or a fresh never-set one when no in-process worker registered it."""
    if flow_run_id is None:
        return threading.Event()
    with _lock:
        return _events.get(_key(flow_run_id)) or threading.Event()


def take_back(flow_run_id: UUID, reason: str) -> bool:
    """Mark the run as no longer this worker's; its waits end (its cancel event is set).
    Only a run in flight here can be taken back: ``False`` if it already left."""
    with _lock:
        event = _events.get(flow_run_id)
        if event is None:
            return False
        _taken.setdefault(flow_run_id, reason)
    event.set()
    return True


def taken_back(flow_run_id: UUID | str | None) -> str | None:
    """Why the run was taken back, or ``None`` while it is this worker's."""
    if flow_run_id is None:
        return None
    with _lock:
        return _taken.get(_key(flow_run_id))


def check_ours(flow_run_id: UUID | str | None) -> None:
    """Raise :class:`TakenBack` if the run was taken back."""
    reason = taken_back(flow_run_id)
    if reason is not None:
        raise TakenBack(f"run {flow_run_id} taken back: {reason}")


def expect_verdict(flow_run_id: UUID, verdict: concurrent.futures.Future[None]) -> None:
    """The worker is checking with the API whether the run is still its own (it calls
    :func:`take_back` if not); :func:`confirm_ours` waits for that answer."""
    with _lock:
        _verdicts[flow_run_id] = verdict


def verdict_of(flow_run_id: UUID) -> concurrent.futures.Future[None] | None:
    """The ownership check under way for the run (see :func:`expect_verdict`), if any."""
    with _lock:
        return _verdicts.get(flow_run_id)


def confirm_ours(flow_run_id: UUID | str | None, timeout: float = CONFIRM_SECONDS) -> None:
    """Before a run writes what it made: wait for the pending ownership check, if any, then
    :func:`check_ours`. A check that failed on the API's side counts as "still ours" (the
    run's own state writes meet the same API); one that never answers means the worker's
    loop is gone, and the run is taken back."""
    if flow_run_id is None:
        return
    with _lock:
        verdict = _verdicts.get(_key(flow_run_id))
    if verdict is not None:
        try:
            verdict.result(timeout=timeout)
        except concurrent.futures.TimeoutError:
            take_back(_key(flow_run_id), f"the worker did not confirm it within {timeout:g}s")
        except concurrent.futures.CancelledError:
            take_back(_key(flow_run_id), "the worker stopped before confirming it")
        except Exception:
            pass
    check_ours(flow_run_id)


def _key(flow_run_id: UUID | str) -> UUID:
    return flow_run_id if isinstance(flow_run_id, UUID) else UUID(str(flow_run_id))
