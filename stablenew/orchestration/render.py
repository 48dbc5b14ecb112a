"""What the ``render-job`` flow does, kept out of ``flows/`` so it is testable without Prefect."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

from PIL import Image

from stablenew.errors import WebUIError, WebUIInterrupted, WebUIUnreachable
from stablenew.orchestration import gpu_gate
from stablenew.orchestration.gpu_gate import GateCancelled, Rank
from stablenew.orchestration.webui_access import preflight, webui_client
from stablenew.outputs import OutputImage, RunStamp, write_job_outputs
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings
from stablenew.webui import run_stages

# Backoff between attempts of a stage chain that met a transient WebUI fault.
RETRY_DELAYS: list[float] = [1.0, 2.0, 4.0]


def wait_for_webui(record: NormalizedJobRecord) -> str:
    """Return the WebUI URL once it answers and knows every name the record uses.

    Waiting is bounded by ``webui.ready_timeout``; unknown names fail fast.
    """
    settings = get_settings()
    client = webui_client(settings)
    deadline = time.monotonic() + settings.webui.ready_timeout
    while True:
        if client.is_ready():
            preflight(record, settings)
            return client.base_url
        if time.monotonic() >= deadline:
            raise WebUIUnreachable(
                f"WebUI not ready after {settings.webui.ready_timeout:.0f}s",
                url=client.base_url,
            )
        time.sleep(0.5)


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


def is_transient_failure(task: Any, task_run: Any, state: Any) -> bool:
    """Prefect retry condition: retry only WebUI faults that may pass (5xx, OOM, timeouts)."""
    try:
        state.result()
    except WebUIError as e:
        return e.retryable
    except Exception:
        return False
    return False


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
