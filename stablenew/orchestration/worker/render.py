"""What the ``render-job`` flow does, kept out of ``flows/`` so it is testable without Prefect.

Two kinds of trouble, kept apart:

* **The WebUI is away** (connection refused or dropped, and it does not answer right after):
  the run waits for it, polling ``/progress``, for at most ``webui.outage_timeout`` seconds in
  all. Waiting uses up none of the job's retries; the run keeps this worker's GPU gate while
  it waits, since the worker's one WebUI is the one that is away: a job behind it could do
  nothing but wait too, and this way the best-ranked run still goes first when it is back.
* **A request of this job failed** (5xx, out of memory, a timeout, a connection dropped while
  the WebUI stays up, or a request lost with the WebUI): a job fault, retried after
  ``RETRY_DELAYS``; each retry queues at the GPU gate again, so a backoff does not idle it.

Each wait and retry is told through :class:`RunNotes` (the flow logs it on the run and shows
the wait as the run's state name).
"""

from __future__ import annotations

import io
import logging
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any, Protocol
from uuid import UUID

from PIL import Image

from stablenew.errors import WebUIError, WebUIInterrupted, WebUIUnreachable
from stablenew.orchestration.worker import cancellation, gpu_gate
from stablenew.orchestration.worker.gpu_gate import GateCancelled, Rank
from stablenew.orchestration.worker.webui_access import preflight, webui_client
from stablenew.outputs import OutputImage, RunStamp, write_job_outputs
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings
from stablenew.webui import WebUIClient, run_stages
from stablenew.webui._errors import never_reached

logger = logging.getLogger(__name__)

# Backoff between attempts of a stage chain that met a transient fault of the job.
RETRY_DELAYS: list[float] = [1.0, 2.0, 4.0]
OUTAGE_POLL_SECONDS = 1.0


class RunNotes(Protocol):
    """Where a run tells about its waits and retries."""

    def waiting(self, reason: str) -> None:
        """A wait for the WebUI begins."""

    def resumed(self, message: str) -> None:
        """The WebUI is back; the run goes on."""

    def retrying(self, message: str) -> None:
        """An attempt failed and another follows."""


class LogNotes:
    """:class:`RunNotes` on a plain logger (outside Prefect)."""

    def __init__(self, log: logging.Logger | logging.LoggerAdapter[logging.Logger]) -> None:
        self._log = log

    def waiting(self, reason: str) -> None:
        self._log.warning("Waiting for WebUI: %s", reason)

    def resumed(self, message: str) -> None:
        self._log.info("%s", message)

    def retrying(self, message: str) -> None:
        self._log.warning("%s", message)


class OutageClock:
    """How long one run may still wait for its WebUI: ``webui.outage_timeout`` over all its
    waits together, so a WebUI that keeps going away cannot hold a run forever."""

    def __init__(self, seconds: float) -> None:
        self.seconds = seconds
        self.used = 0.0

    def remaining(self, since: float | None = None) -> float:
        running = time.monotonic() - since if since is not None else 0.0
        return self.seconds - self.used - running


def wait_out_outage(
    client: WebUIClient,
    cause: WebUIError,
    cancel: threading.Event,
    clock: OutageClock,
    notes: RunNotes,
    *,
    probe_first: bool = True,
    stopping: Callable[[], bool] = lambda: False,
) -> bool:
    """Wait for the WebUI to answer again after ``cause``; ``False`` at once when it answers
    the first probe (the failure was about the request, not the WebUI's availability).

    Raises :class:`WebUIUnreachable` (not retryable) when the run's outage budget is spent,
    :class:`WebUIInterrupted` when the run is cancelled (or ``stopping()``) meanwhile.
    """
    if probe_first and client.is_ready():
        return False
    started = time.monotonic()
    if clock.remaining() <= 0:
        raise WebUIUnreachable(
            f"WebUI did not come back within {clock.seconds:g}s (webui.outage_timeout)",
            url=client.base_url,
            retryable=False,
        ) from cause
    notes.waiting(
        f"WebUI at {client.base_url} is not answering ({cause}); waiting up to "
        f"{clock.remaining():.0f}s for it to come back"
    )
    try:
        while True:
            if cancel.wait(min(OUTAGE_POLL_SECONDS, max(clock.remaining(started), 0.0))):
                raise WebUIInterrupted("cancelled while waiting for the WebUI", url=client.base_url)
            if stopping():
                raise WebUIInterrupted(
                    "the worker is stopping; it was waiting for the WebUI", url=client.base_url
                )
            if client.is_ready():
                notes.resumed(
                    f"WebUI at {client.base_url} is back after "
                    f"{time.monotonic() - started:.0f}s; going on"
                )
                return True
            if clock.remaining(started) <= 0:
                raise WebUIUnreachable(
                    f"WebUI did not come back within {clock.seconds:g}s (webui.outage_timeout)",
                    url=client.base_url,
                    retryable=False,
                ) from cause
    finally:
        clock.used += time.monotonic() - started


def wait_for_webui(
    record: NormalizedJobRecord,
    cancel: threading.Event | None = None,
    *,
    clock: OutageClock | None = None,
    notes: RunNotes | None = None,
) -> str:
    """Return the WebUI URL once it answers and knows every name the record uses.

    A WebUI that does not answer is waited for (see :func:`wait_out_outage`; bounded by
    ``webui.outage_timeout``); unknown names fail fast.
    """
    settings = get_settings()
    client = webui_client(settings)
    cancel = cancel or threading.Event()
    clock = clock or OutageClock(settings.webui.outage_timeout)
    notes = notes or LogNotes(logger)
    while True:
        cause: WebUIError
        try:
            if client.is_ready():
                preflight(record, settings)
                return client.base_url
            cause = WebUIUnreachable("WebUI not ready", url=client.base_url)
            probe = False  # just probed
        except WebUIUnreachable as e:  # went away between the probe and the lists
            cause, probe = e, True
        if not wait_out_outage(client, cause, cancel, clock, notes, probe_first=probe):
            raise cause


# A run the in-process worker did not announce (it should not happen) queues behind all others.
_UNANNOUNCED: Rank = (99, datetime.max.replace(tzinfo=UTC))


@contextmanager
def gpu_turn(run_id: UUID | None, cancel_event: threading.Event) -> Iterator[Callable[[], None]]:
    """Hold this worker's GPU gate for the block (a no-op under the stock process worker).

    Yields ``release``: the block calls it once the WebUI has answered for the last time,
    so the next job can start generating while this one's result is still being recorded.
    """
    gate = gpu_gate.installed()
    if gate is None or run_id is None:
        yield lambda: None
        return
    try:
        with gate.hold(run_id, _UNANNOUNCED, cancel_event):
            yield lambda: gate.release(run_id)
    except GateCancelled as e:
        raise WebUIInterrupted(str(e), url=webui_client().base_url) from e


def _worker_stopping() -> bool:
    """Whether this worker is handing its runs back (stopping): a wait should end."""
    gate = gpu_gate.installed()
    return bool(gate is not None and getattr(gate, "handing_back", False))


def render_with_retries(
    record: NormalizedJobRecord,
    run_id: UUID | None,
    cancel: threading.Event,
    *,
    clock: OutageClock | None = None,
    notes: RunNotes | None = None,
) -> list[OutputImage]:
    """The stage chain on this worker's WebUI, holding its GPU gate, through WebUI outages
    (waited for) and job faults (retried after ``RETRY_DELAYS``); see the module doc."""
    client = webui_client()
    clock = clock or OutageClock(get_settings().webui.outage_timeout)
    notes = notes or LogNotes(logger)
    attempts = len(RETRY_DELAYS) + 1
    failed = 0
    while True:
        try:
            with gpu_turn(run_id, cancel) as release:
                while True:
                    try:
                        return render_images(record, cancel, on_webui_done=release)
                    except WebUIUnreachable as e:
                        if not wait_out_outage(
                            client, e, cancel, clock, notes, stopping=_worker_stopping
                        ):
                            raise  # the WebUI answers: this request failed, not the WebUI
                        if never_reached(e):
                            continue  # the request never got there: nothing of the job used
                        # The request was in flight when the WebUI went: one attempt of the
                        # job (a job that brings its WebUI down must not do so forever).
                        failed += 1
                        if failed >= attempts:
                            raise
                        notes.retrying(
                            f"Attempt {failed} of {attempts} was lost when the WebUI went "
                            f"away ({e}); retrying now that it is back"
                        )
        except WebUIError as e:
            if isinstance(e, WebUIInterrupted) or not e.retryable or cancel.is_set():
                raise
            failed += 1
            if failed >= attempts:
                raise
            delay = RETRY_DELAYS[failed - 1]
            notes.retrying(f"Attempt {failed} of {attempts} failed ({e}); retrying in {delay:g}s")
            if cancel.wait(delay):
                raise WebUIInterrupted("cancelled before a retry", url=client.base_url) from e


def render_images(
    record: NormalizedJobRecord,
    cancel_event: threading.Event,
    on_webui_done: Callable[[], None] | None = None,
) -> list[OutputImage]:
    """Run the stage chain on this worker's WebUI; images with their sizes.

    ``on_webui_done`` is called once every stage has answered, before the images are
    decoded; not after a failure, since a retry must still hold the GPU.
    """
    result = run_stages(webui_client(), record, cancel_event=cancel_event)
    if on_webui_done is not None:
        on_webui_done()
    outputs: list[OutputImage] = []
    for image in result.images:
        with Image.open(io.BytesIO(image.png)) as decoded:  # reads the header only
            width, height = decoded.size
        outputs.append(OutputImage(image.png, image.seed, image.infotext, width, height))
    return outputs


class RunCancelled(Exception):
    """The run was cancelled and stopped cleanly; its final state is CANCELLED (the message)."""


def render_job_run(
    record: NormalizedJobRecord,
    run_id: UUID | None,
    attempt: int,
    *,
    log: logging.Logger | logging.LoggerAdapter[logging.Logger],
    notes: RunNotes,
) -> list[dict[str, Any]]:
    """One render run, whoever drives it (the flow under Prefect's engine, or the pool
    worker itself): wait for the WebUI, generate holding this worker's GPU gate, write the
    attempt's files; the outputs written.

    Raises :class:`RunCancelled` when the run was cancelled, and
    :class:`~stablenew.orchestration.worker.cancellation.TakenBack` when the pool gave the
    run to another worker meanwhile (nothing is written then).
    """
    cancel = cancellation.event_for(run_id)
    clock = OutageClock(get_settings().webui.outage_timeout)  # one budget for all its waits
    try:
        # Unknown model/sampler/... fails fast here; a WebUI that is away is waited for.
        wait_for_webui(record, cancel, clock=clock, notes=notes)
        cancellation.check_ours(run_id)
        if cancel.is_set():
            raise RunCancelled("cancelled before generation")
        # Takes this worker's GPU gate (each attempt anew) and gives it up at the last WebUI
        # answer, so the next job generates while this one's files are written.
        images = render_with_retries(record, run_id, cancel, clock=clock, notes=notes)
    except WebUIInterrupted:
        cancellation.check_ours(run_id)  # taken back, not cancelled: write nothing
        if cancel.is_set():
            log.info("Job %s cancelled during generation", record.job_id)
            raise RunCancelled("cancelled: WebUI interrupted") from None
        raise
    # A run the pool has meanwhile given to another worker writes neither files nor state.
    cancellation.confirm_ours(run_id)
    stamp = RunStamp(str(run_id) if run_id else None, attempt=max(attempt, 1))
    outputs = write_outputs(record, images, stamp)
    log.info("Job %s wrote %d image(s)", record.job_id, len(outputs))
    return outputs


def write_outputs(
    record: NormalizedJobRecord, images: list[OutputImage], run: RunStamp | None = None
) -> list[dict[str, Any]]:
    """Write this run attempt's images into its own folder (see :mod:`stablenew.outputs`)."""
    written = write_job_outputs(get_settings().resolved_output_root, record, images, run)
    return [
        {
            "path": str(w.path),
            "seed": w.seed,
            "size": f"{w.width}x{w.height}" if w.width and w.height else None,
            "infotext": w.infotext,
        }
        for w in written
    ]
