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
from typing import Any, cast
from uuid import UUID, uuid4

import anyio
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.actions import ArtifactCreate
from prefect.client.schemas.objects import FlowRun, State
from prefect.exceptions import Abort
from prefect.states import Cancelled, Completed, Running, exception_to_failed_state
from prefect.utilities.engine import propose_state
from pydantic import ValidationError

from stablenew.orchestration.services.artifacts import (
    apublish_pack_artifact_if_due,
    run_artifact,
)
from stablenew.orchestration.worker.outage import steadily
from stablenew.orchestration.worker.render import RunCancelled, render_job_run
from stablenew.orchestration.worker.run_notes import PrefectRunNotes
from stablenew.records import NormalizedJobRecord

RENDER_FLOW = "render-job"

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


Finish = Callable[[UUID, State[Any], list[ArtifactCreate]], Awaitable[OrchestrationResult[Any]]]


class _FinalStateWriter:
    """The client ``propose_state`` is given for a run's final state: the state is written
    by ``finish`` (:meth:`~stablenew.orchestration.worker.scheduled_runs.ScheduledRuns.finish`),
    with the run's artifacts; ``propose_state`` asks nothing else of its client."""

    def __init__(self, finish: Finish, artifacts: list[ArtifactCreate]) -> None:
        self._finish = finish
        self._artifacts = artifacts

    async def set_flow_run_state(
        self, flow_run_id: UUID, state: State[Any], force: bool = False
    ) -> OrchestrationResult[Any]:
        assert not force, "a run's final state is proposed, never forced"
        return await self._finish(flow_run_id, state, self._artifacts)


async def drive_render_run(
    client: PrefectClient,
    flow_run: FlowRun,
    logger: Logger,
    *,
    finish: Finish,
    started: Callable[[], Awaitable[bool]] | None = None,
) -> State[Any]:
    """Take a claimed run of the render flow to its final state; returns the state the
    server last gave it. That is not final when RUNNING was refused (cancelled meanwhile):
    the caller decides then.

    With ``started`` the worker starts the run (RUNNING) when it gets the GPU, and
    ``started()`` says whether it did; a run whose images are made but whose start could
    not be written then (the API was away) proposes RUNNING before its end. Without, the
    run is started here first, as Prefect's engine starts it.

    The final state is written by ``finish``, with the run's artifact when it COMPLETED.

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
    artifacts: list[ArtifactCreate] = []
    try:
        notes = PrefectRunNotes(logger, flow_run.id)
        job = partial(render_job_run, record, flow_run.id, attempt, log=logger, notes=notes)
        outputs = await anyio.to_thread.run_sync(job, abandon_on_cancel=True)
        if started is not None and not await started():
            state = await start()
            if not state.is_running():
                return state
            logger.info("Beginning flow run %r for flow %r", flow_run.name, RENDER_FLOW)
        # The run's own artifact goes with its COMPLETED (see ScheduledRuns.finish).
        artifacts.append(run_artifact(record, outputs, flow_run.id))
        await apublish_pack_artifact_if_due(record, run=(client, flow_run.id), log=logger)
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
    # A final state that reached the server before it died is refused the second time: the
    # same transition id is answered with the state it wrote, an Abort makes the caller read
    # the run; either way the run has ended.
    final.state_details.transition_id = uuid4()
    writer = cast(PrefectClient, _FinalStateWriter(finish, artifacts))
    state = await steadily(partial(propose_state, writer, final, flow_run_id=flow_run.id))
    logger.info("Finished in state %s", state)
    return state
