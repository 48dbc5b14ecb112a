"""Flow ``render-job``: one normalized job record → images on disk, on a GPU worker."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger, task
from prefect.artifacts import acreate_table_artifact
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from stablenew.errors import WebUIInterrupted
from stablenew.orchestration import cancellation
from stablenew.orchestration.render import (
    RETRY_DELAYS,
    artifact_rows,
    is_transient_failure,
    render_images,
    wait_for_webui,
    write_outputs,
)
from stablenew.records import NormalizedJobRecord


@task(name="webui-preflight", retries=0, cache_policy=None, persist_result=False)
def webui_preflight(record: NormalizedJobRecord) -> str:
    """Wait (bounded) for the WebUI, and check it has the record's model, sampler, ..."""
    return wait_for_webui(record)


@task(
    name="render-stages",
    retries=len(RETRY_DELAYS),
    retry_delay_seconds=RETRY_DELAYS,
    retry_condition_fn=is_transient_failure,
    cache_policy=None,
    persist_result=False,
)
def render_stages(record: NormalizedJobRecord) -> list[Any]:
    """Run txt2img → img2img → upscale on the WebUI; transient faults are retried."""
    return render_images(record, cancellation.event_for(flow_run.get_id()))


@task(name="write-outputs", cache_policy=None, persist_result=False)
def save_outputs(record: NormalizedJobRecord, images: list[Any]) -> list[dict[str, Any]]:
    """Write images, record.json and result.json under the output root."""
    return write_outputs(record, images)


@flow(name="render-job", persist_result=False, log_prints=False)
async def render_job(record: NormalizedJobRecord) -> list[dict[str, Any]] | State[Any]:
    """Render one job. Cancelling it interrupts the WebUI and ends the run CANCELLED."""
    logger = get_run_logger()
    webui_preflight(record)
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
    outputs = save_outputs(record, images)
    await acreate_table_artifact(
        table=artifact_rows(outputs),
        description=f"Outputs of {record.run_name} ({record.job_id})",
    )
    logger.info("Job %s wrote %d image(s)", record.job_id, len(outputs))
    return outputs
