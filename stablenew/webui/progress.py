"""Live progress: poll ``GET /progress`` and yield snapshots for a progress bar."""

from __future__ import annotations

import math
import threading
import time
from collections.abc import Iterator

from stablenew.webui.client import WebUIClient
from stablenew.webui.models import ProgressSnapshot


def poll_progress(
    client: WebUIClient,
    *,
    interval: float = 0.5,
    timeout: float = 3600.0,
    idle_grace: float = 5.0,
    stop: threading.Event | None = None,
) -> Iterator[ProgressSnapshot]:
    """Yield a snapshot (step, steps, eta, job_no, job_count, ...) every ``interval`` seconds.

    Only busy snapshots are yielded. Polling stops once the WebUI is idle after having been
    busy, when it stays idle for ``idle_grace`` seconds without a job starting (the request
    may still wait in the queue of another WebUI client), when ``stop`` is set, or after
    ``timeout`` seconds: at most ``timeout / interval + 1`` polls. Errors propagate as
    :class:`stablenew.errors.WebUIError`.
    """
    started = time.monotonic()
    seen_busy = False
    for _ in range(math.ceil(timeout / interval) + 1):
        if stop is not None and stop.is_set():
            return
        snap = client.progress()
        if snap.busy:
            seen_busy = True
            yield snap
        elif seen_busy or time.monotonic() - started >= idle_grace:
            return
        if time.monotonic() - started >= timeout:
            return
        if stop is not None:
            if stop.wait(interval):
                return
        else:
            time.sleep(interval)
