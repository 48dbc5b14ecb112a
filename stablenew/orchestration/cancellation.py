"""Per-flow-run cancel signals shared by the in-process worker and the render flow.

The worker's watcher sets the event when Prefect marks the run CANCELLING; the flow checks it
between and during stages. Under the stock process worker nothing sets it (Prefect kills the
process instead), which is why the flow treats a missing event as "never cancelled".
"""

from __future__ import annotations

import threading
from uuid import UUID

_lock = threading.Lock()
_events: dict[UUID, threading.Event] = {}


def register(flow_run_id: UUID) -> threading.Event:
    with _lock:
        return _events.setdefault(flow_run_id, threading.Event())


def unregister(flow_run_id: UUID) -> None:
    with _lock:
        _events.pop(flow_run_id, None)


def event_for(flow_run_id: UUID | str | None) -> threading.Event:
    """The run's event, or a fresh never-set one when no in-process worker registered it."""
    if flow_run_id is None:
        return threading.Event()
    key = flow_run_id if isinstance(flow_run_id, UUID) else UUID(str(flow_run_id))
    with _lock:
        return _events.get(key) or threading.Event()
