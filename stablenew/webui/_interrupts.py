"""Interrupts seen from the client: telling a partial answer from a whole one, and stopping a
job nobody waits for any more (a generation call that ran past the read timeout)."""

from __future__ import annotations

import logging
import time
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

from stablenew.errors import WebUIError
from stablenew.webui.models import GenerationResult

if TYPE_CHECKING:
    from stablenew.webui.client import WebUIClient

logger = logging.getLogger("stablenew.webui.client")

SETTLE_POLL = 0.25
REINTERRUPT_AFTER = 1.0


def stop_generation(client: WebUIClient, timeout: float) -> bool:
    """Send ``/interrupt``, then poll ``/progress`` until the WebUI is idle (``job_count`` 0)
    twice in a row, at most ``timeout`` s; whether it is.

    A job that is busy without the interrupt flag is interrupted again (at most once a
    second): a request that was queued behind the interrupted one begins, and A1111 clears
    the flag when a job begins. ``/skip`` is not sent: in A1111 and Forge an interrupt already
    ends the current batch and drops the remaining ones, all a skip would do and more. Assumes
    the WebUI serves this worker alone, as a StableNew worker's WebUI does: whatever runs on
    it after our request timed out is our request or what holds it up.
    """
    deadline = time.monotonic() + timeout
    interrupted_at: float | None = None
    idle_seen = False
    while True:
        if interrupted_at is None or time.monotonic() - interrupted_at >= REINTERRUPT_AFTER:
            try:
                client.interrupt()
                interrupted_at = time.monotonic()
                logger.info("interrupted the WebUI at %s (a call timed out)", client.base_url)
            except WebUIError as e:
                logger.debug("interrupt while settling: %s", e)
        try:
            snap = client.progress(read_timeout=max(1.0, deadline - time.monotonic()))
        except WebUIError as e:
            logger.debug("progress while settling: %s", e)
        else:
            if not snap.busy and idle_seen:
                return True
            # Idle once may be the instant between the interrupted job and the request
            # queued behind it: only idle twice, a poll apart, is idle.
            idle_seen = not snap.busy
            if snap.interrupted:  # stopping: no new interrupt needed yet
                interrupted_at = time.monotonic()
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            return False
        time.sleep(min(SETTLE_POLL, remaining))


def partial_answer(
    client: WebUIClient, result: GenerationResult, payload: Mapping[str, Any]
) -> str | None:
    """Why a 200 answer is a partial one, or ``None``.

    A1111 answers an interrupted job with 200 and whatever images it had. Two signals, in
    order: fewer images than ``batch_size * n_iter`` (remaining batches were dropped), and
    the server's own state right after the answer: ``state.interrupted`` stays true after
    a job ends and is reset only when the next job begins, so it is ours when its
    ``job_timestamp`` equals the one in our ``info``. The progress call is lock-free; if it
    fails the answer counts as complete.
    """
    # A selectable script decides how many images come back (grids, tiles, loops).
    if payload.get("send_images", True) is not False and not payload.get("script_name"):
        expected = int(payload.get("batch_size") or 1) * int(payload.get("n_iter") or 1)
        got = len(result.images) - int(result.info.get("index_of_first_image") or 0)
        if got < expected:
            return f"{got} of {expected} images"
    stamp = result.info.get("job_timestamp")
    if not stamp:
        return None
    try:
        state = client.progress()
    except WebUIError as e:
        logger.debug("could not check interrupt state: %s", e)
        return None
    if state.interrupted and state.job_timestamp == str(stamp):
        return "server reports the job as interrupted"
    return None
