"""Flow ``render-job``: one normalized job record → images on disk, on a GPU worker."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger, task
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from stablenew.errors import WebUIInterrupted
from stablenew.orchestration import cancellation
from stablenew.orchestration.artifacts import apublish_run_artifacts
from stablenew.orchestration.deployments import RENDER_TASK
from stablenew.orchestration.render import (
    RETRY_DELAYS,
    gpu_turn,
    is_transient_failure,
    render_images,
    wait_for_webui,
    write_outputs,
)
from stablenew.outputs import RunStamp
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings


@task(
    name=RENDER_TASK,
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=is_transient_failure,
    cache_policy=None,
    persist_result=False,
)
def render_stages(record: NormalizedJobRecord) -> list[Any]:
    """Take this worker's GPU, run txt2img → img2img → upscale on the WebUI, give the GPU up
    at the last answer; transient faults are retried (each attempt queues for the GPU again,
    so a backoff does not idle it).

    The gate is taken inside the task: starting a Prefect task costs ~30 ms, which would
    otherwise sit between one job's last answer and the next job's request.
    """
    raw_id = flow_run.get_id()
    run_id = UUID(raw_id) if raw_id else None
    cancel = cancellation.event_for(raw_id)
    with gpu_turn(run_id, cancel) as release:
        return render_images(record, cancel, on_webui_done=release)


@flow(name="render-job", persist_result=False, log_prints=False)
async def render_job(record: NormalizedJobRecord) -> list[dict[str, Any]] | State[Any]:
    """Render one job. Cancelling it interrupts the WebUI and ends the run CANCELLED.

    Only the WebUI work is a task (it has the retry policy); the checks before it and the
    file writing after it are plain calls, since every task costs the server events and
    writes that, per job, would otherwise compete with rendering for the machine.
    """
    logger = get_run_logger()
    wait_for_webui(record)  # bounded wait; unknown model/sampler/... fails fast here
    cancel = cancellation.event_for(flow_run.get_id())
    if cancel.is_set():
        return Cancelled(message="cancelled before generation")
    try:
        images = render_stages(record)
    except WebUIInterrupted:
        if cancel.is_set():
            logger.info("Job %s cancelled during generation", record.job_id)
            return Cancelled(message="cancelled: WebUI interrupted")
        raise
    run = RunStamp(flow_run.get_id(), attempt=max(flow_run.get_run_count(), 1))
    outputs = write_outputs(record, images, run)
    # After the GPU was released: images link to the loopback file server, which makes the
    # thumbnails when the UI asks; the pack's keyed artifact is refreshed at most every 10 s.
    settings = get_settings()
    await apublish_run_artifacts(
        record, outputs, home=settings.home, output_root=settings.resolved_output_root
    )
    logger.info("Job %s wrote %d image(s)", record.job_id, len(outputs))
    return outputs
