"""Flow ``render-job``: one normalized job record → images on disk, on a GPU worker."""

from __future__ import annotations

from typing import Any
from uuid import UUID

from prefect import flow, get_run_logger
from prefect.runtime import flow_run
from prefect.states import Cancelled, State

from stablenew.orchestration.services.artifacts import apublish_run_artifacts
from stablenew.orchestration.worker.render import RunCancelled, render_job_run
from stablenew.orchestration.worker.run_notes import PrefectRunNotes
from stablenew.records import NormalizedJobRecord


@flow(name="render-job", persist_result=False, log_prints=False)
async def render_job(record: NormalizedJobRecord) -> list[dict[str, Any]] | State[Any]:
    """Render one job. Cancelling it interrupts the WebUI and ends the run CANCELLED.

    Everything is a plain call, no Prefect task: a task run costs the server ~50 ms of CPU
    per job, and one left RUNNING by a worker that died would stand in the way of the run
    being run again. The WebUI work retries transient faults of the job itself and waits out
    a WebUI that went away (``stablenew.orchestration.worker.render``); each wait and retry is
    logged on the run, and a wait shows as its state ``Waiting for WebUI``.

    The ``stablenew`` worker runs the same job code without Prefect's engine
    (``orchestration/worker/direct_run.py``); this flow is what any other worker runs.
    """
    logger = get_run_logger()
    raw_id = flow_run.get_id()
    run_id = UUID(raw_id) if raw_id else None
    try:
        outputs = render_job_run(
            record,
            run_id,
            flow_run.get_run_count(),
            log=logger,
            notes=PrefectRunNotes(logger, run_id),
        )
    except RunCancelled as e:
        return Cancelled(message=str(e))
    # After the GPU was released: images link to the loopback file server, which makes the
    # thumbnails when the UI asks; the pack's keyed artifact is refreshed at most every 10 s.
    await apublish_run_artifacts(record, outputs, log=logger)
    return outputs
