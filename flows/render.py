"""Flow ``render-job``: one normalized job record → images on disk, on a GPU worker."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from stablenew.errors import WebUIInterrupted
from stablenew.orchestration.services.artifacts import apublish_run_artifacts
from stablenew.orchestration.worker import cancellation
from stablenew.orchestration.worker.render import (
    OutageClock,
    render_with_retries,
    wait_for_webui,
    write_outputs,
)
from stablenew.orchestration.worker.run_notes import PrefectRunNotes
from stablenew.outputs import RunStamp
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings


@flow(name="render-job", persist_result=False, log_prints=False)
async def render_job(record: NormalizedJobRecord) -> list[dict[str, Any]] | State[Any]:
    """Render one job. Cancelling it interrupts the WebUI and ends the run CANCELLED.

    Everything is a plain call, no Prefect task: a task run costs the server ~50 ms of CPU
    per job, and one left RUNNING by a worker that died would stand in the way of the run
    being run again. The WebUI work retries transient faults of the job itself and waits out
    a WebUI that went away (``stablenew.orchestration.worker.render``); each wait and retry is
    logged on the run, and a wait shows as its state ``Waiting for WebUI``.
    """
    logger = get_run_logger()
    settings = get_settings()
    raw_id = flow_run.get_id()
    run_id = UUID(raw_id) if raw_id else None
    cancel = cancellation.event_for(raw_id)
    clock = OutageClock(settings.webui.outage_timeout)  # one budget for all of the run's waits
    notes = PrefectRunNotes(logger, run_id)
    try:
        # Unknown model/sampler/... fails fast here; a WebUI that is away is waited for.
        wait_for_webui(record, cancel, clock=clock, notes=notes)
        cancellation.check_ours(run_id)
        if cancel.is_set():
            return Cancelled(message="cancelled before generation")
        # Takes this worker's GPU gate (each attempt anew) and gives it up at the last WebUI
        # answer, so the next job generates while this one's files are written.
        images = render_with_retries(record, run_id, cancel, clock=clock, notes=notes)
    except WebUIInterrupted:
        cancellation.check_ours(run_id)  # taken back, not cancelled: write nothing
        if cancel.is_set():
            logger.info("Job %s cancelled during generation", record.job_id)
            return Cancelled(message="cancelled: WebUI interrupted")
        raise
    # A run the pool has meanwhile given to another worker writes neither files nor state.
    cancellation.confirm_ours(run_id)
    run = RunStamp(raw_id, attempt=max(flow_run.get_run_count(), 1))
    outputs = write_outputs(record, images, run)
    # After the GPU was released: images link to the loopback file server, which makes the
    # thumbnails when the UI asks; the pack's keyed artifact is refreshed at most every 10 s.
    await apublish_run_artifacts(
        record, outputs, home=settings.home, output_root=settings.resolved_output_root
    )
    logger.info("Job %s wrote %d image(s)", record.job_id, len(outputs))
    return outputs
