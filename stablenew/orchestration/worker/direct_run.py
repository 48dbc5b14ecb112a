"""A render run driven by the pool worker itself, without Prefect's flow engine.

For every run, Prefect's engine reads the run once more and PATCHes its flow version and
retry policy, then builds a run context, a result store and its own log and event plumbing.
That is two requests of the server's and a fifth of the worker's CPU per job
(``bench/overhead.py``, ``py-spy --gil``), spent on a run this worker has just claimed and
holds, of a flow with no retries, hooks or persisted result. Here the worker proposes the
run's states itself, each decided by Prefect's orchestration rules just as the engine's are:
RUNNING (a GPU worker's, when the run gets the GPU), then COMPLETED, FAILED with the
exception, or CANCELLED. It logs the engine's two lines on the run and runs the job code the
flow runs (:func:`~stablenew.orchestration.worker.render.render_job_run`). Runs of any other
flow (the control pool's) still go through the engine.
"""

from __future__ import annotations

import logging
from collections.abc import Awaitable, Callable
from functools import partial
from typing import Any

import anyio
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import Abort
from prefect.states import Cancelled, Completed, Running, exception_to_failed_state
from prefect.utilities.engine import propose_state
from pydantic import ValidationError

from stablenew.orchestration.services.artifacts import apublish_run_artifacts
from stablenew.orchestration.worker.outage import steadily
from stablenew.orchestration.worker.render import RunCancelled, render_job_run
from stablenew.orchestration.worker.run_notes import PrefectRunNotes
from stablenew.records import NormalizedJobRecord

RENDER_FLOW = "render-job"

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


async def drive_render_run(
    client: PrefectClient,
    flow_run: FlowRun,
    logger: Logger,
    *,
    started: Callable[[], Awaitable[bool]] | None = None,
) -> State[Any]:
    """Take a claimed run of the render flow to its final state; returns the state the
    server last gave it. That is not final when RUNNING was refused (cancelled meanwhile):
    the caller decides then.

    With ``started`` the worker starts the run (RUNNING) when it gets the GPU, and
    ``started()`` says whether it did; a run whose images are made but whose start could
    not be written then (the API was away) proposes RUNNING before its end. Without, the
    run is started here first, as Prefect's engine starts it.

    Raises what says the run is no longer this worker's to end (``Abort``: handed back,
    taken back, or refused by the server), with no state written, and what a state write
    raised (the API is down).
    """
    try:
        record = NormalizedJobRecord.model_validate((flow_run.parameters or {}).get("record"))
    except ValidationError as exc:
        message = "Validation of flow parameters failed with error:"
        logger.error("%s %s", message, exc)
        failed = await exception_to_failed_state(exc, message=message)
        return await propose_state(client, failed, flow_run_id=flow_run.id)
    # Asked afresh while the API is down (see outage.steadily): the run holds one of the
    # worker's slots meanwhile. A RUNNING that reached a server killed before it answered
    # is proposed twice and counted as two tries, which only such a crash can do.
    start = partial(steadily, partial(propose_state, client, Running(), flow_run_id=flow_run.id))
    if started is None:
        state = await start()
        if not state.is_running():
            return state
        logger.info("Beginning flow run %r for flow %r", flow_run.name, RENDER_FLOW)
    # RUNNING counts a new try, unless the run was marked as resuming one (see run_notes).
    attempt = flow_run.run_count + (0 if flow_run.empirical_policy.resuming else 1)
    final: State[Any]
    try:
        notes = PrefectRunNotes(logger, flow_run.id)
        job = partial(render_job_run, record, flow_run.id, attempt, log=logger, notes=notes)
        outputs = await anyio.to_thread.run_sync(job, abandon_on_cancel=True)
        if started is not None and not await started():
            state = await start()
            if not state.is_running():
                return state
            logger.info("Beginning flow run %r for flow %r", flow_run.name, RENDER_FLOW)
        await apublish_run_artifacts(record, outputs, run=(client, flow_run.id), log=logger)
        final = Completed()
    except RunCancelled as exc:
        final = Cancelled(message=str(exc))
    except Abort:
        raise
    except Exception as exc:
        logger.error("Encountered exception during execution: %r", exc, exc_info=True)
        final = await exception_to_failed_state(exc, message="Flow run encountered an exception:")
    if started is not None:
        await started()  # a start still on its way lands before the end, not after it
    # A final state that reached the server before it died is refused the second time
    # (Abort): the caller then reads the run, which has ended.
    state = await steadily(partial(propose_state, client, final, flow_run_id=flow_run.id))
    logger.info("Finished in state %s", state)
    return state
