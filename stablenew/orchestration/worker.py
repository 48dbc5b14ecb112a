"""The ``stablenew`` worker type: one long-lived process per GPU/WebUI, flow runs in-process.

Prefect's stock process worker starts a new Python process per run (seconds of imports and
engine start-up while the GPU idles). This worker keeps the flow loaded and the WebUI session
warm, runs each flow run through Prefect's own engine in a thread, and still gets polling,
heartbeats, pool creation and claim semantics from :class:`BaseWorker`.

It also holds instead of draining the queue when its WebUI is not ready, and turns a
CANCELLING run into a WebUI interrupt and a CANCELLED state.
"""

from __future__ import annotations

import asyncio
import logging
import os
import threading
from collections.abc import Callable
from functools import partial
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.flow_engine import run_flow
from prefect.flows import Flow, load_flow_from_flow_run
from prefect.states import Cancelled
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseVariables,
    BaseWorker,
    BaseWorkerResult,
)

from stablenew.orchestration import cancellation

logger = logging.getLogger(__name__)

CANCEL_POLL_SECONDS = 0.25
CANCEL_GRACE_SECONDS = 15.0


class StableNewJobConfiguration(BaseJobConfiguration):
    """Nothing to configure per run: the worker's own settings bind it to its WebUI."""


class StableNewVariables(BaseVariables):
    """No per-deployment infrastructure variables."""


class StableNewWorkerResult(BaseWorkerResult):
    """Outcome of one in-process run."""


ReadinessCheck = Callable[[], str | None]
"""Returns ``None`` when the WebUI is ready, else a human reason (run in a thread)."""

Interrupter = Callable[[], None]


class StableNewWorker(
    BaseWorker[StableNewJobConfiguration, StableNewVariables, StableNewWorkerResult]
):
    type = "stablenew"
    job_configuration = StableNewJobConfiguration
    job_configuration_variables = StableNewVariables
    _description = "Runs StableNew jobs in-process: one worker per GPU/WebUI, no process per run."
    _documentation_url = "https://github.com/stablenew/stablenew"

    def __init__(
        self,
        *args: Any,
        readiness_check: ReadinessCheck | None = None,
        interrupter: Interrupter | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(*args, **kwargs)
        self._readiness_check = readiness_check
        self._interrupter = interrupter
        self._flows: dict[UUID, Flow[..., Any]] = {}
        self._flows_lock = asyncio.Lock()
        self.hold_reason: str | None = None

    # -- polling --------------------------------------------------------------------------

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        if self._readiness_check is not None:
            reason = await anyio.to_thread.run_sync(self._readiness_check)
            if reason != self.hold_reason:
                if reason:
                    self._logger.warning("Holding: %s. Jobs stay queued.", reason)
                else:
                    self._logger.info("WebUI ready; taking jobs.")
                self.hold_reason = reason
            if reason:
                return []
        return await super().get_and_submit_flow_runs()

    # -- running --------------------------------------------------------------------------

    async def _load_flow(self, flow_run: FlowRun) -> Flow[..., Any]:
        key = flow_run.deployment_id or flow_run.flow_id
        async with self._flows_lock:
            flow = self._flows.get(key)
            if flow is None:
                # Runs the deployment's pull steps (chdir into the project) once per deployment.
                flow = await load_flow_from_flow_run(flow_run)
                self._flows[key] = flow
            return flow

    async def run(
        self,
        flow_run: FlowRun,
        configuration: StableNewJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> StableNewWorkerResult:
        try:
            flow = await self._load_flow(flow_run)
        except Exception as exc:
            if task_status is not None:
                task_status.started(os.getpid())
            await self._propose_crashed_state(flow_run, f"could not load the flow: {exc!r}")
            return StableNewWorkerResult(identifier=str(flow_run.id), status_code=1)
        if task_status is not None:
            task_status.started(os.getpid())

        cancel_event = cancellation.register(flow_run.id)
        finished = threading.Event()
        state: State[Any] | None = None
        try:
            async with anyio.create_task_group() as tg:
                tg.start_soon(self._watch_cancellation, flow_run, cancel_event, finished)
                try:
                    state = await anyio.to_thread.run_sync(
                        partial(_run_flow_blocking, flow, flow_run), abandon_on_cancel=True
                    )
                except BaseException as exc:  # the run must never stay RUNNING
                    await self._propose_crashed_state(
                        flow_run, f"worker caught {type(exc).__name__}: {exc}"
                    )
                finally:
                    finished.set()
                    tg.cancel_scope.cancel()
        finally:
            cancellation.unregister(flow_run.id)
        ok = state is not None and state.is_completed()
        return StableNewWorkerResult(identifier=str(flow_run.id), status_code=0 if ok else 1)

    async def _watch_cancellation(
        self, flow_run: FlowRun, cancel_event: threading.Event, finished: threading.Event
    ) -> None:
        """Poll the run's state; on CANCELLING interrupt the WebUI, then force CANCELLED."""
        while not finished.is_set():
            await anyio.sleep(CANCEL_POLL_SECONDS)
            try:
                current = await self.client.read_flow_run(flow_run.id)
            except Exception as exc:  # transient API trouble: try again next tick
                self._logger.debug("cancel watch: reading %s failed: %r", flow_run.id, exc)
                continue
            if current.state is None or current.state.type != StateType.CANCELLING:
                continue
            self.get_flow_run_logger(flow_run).info("Cancel requested: interrupting the WebUI")
            cancel_event.set()
            if self._interrupter is not None:
                try:
                    await anyio.to_thread.run_sync(self._interrupter)
                except Exception as exc:
                    self._logger.warning("WebUI interrupt failed: %s", exc)
            # The flow should now end itself CANCELLED; if it does not, do it for it.
            with anyio.move_on_after(CANCEL_GRACE_SECONDS):
                while not finished.is_set():
                    await anyio.sleep(0.05)
            if not finished.is_set():
                await self.client.set_flow_run_state(
                    flow_run.id, Cancelled(message="cancelled by the worker"), force=True
                )
            return


def _run_flow_blocking(flow: Flow[..., Any], flow_run: FlowRun) -> State[Any]:
    """Run one flow run through Prefect's engine on this (worker) thread."""
    result = run_flow(flow, flow_run=flow_run, return_type="state")
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    if not isinstance(result, State):
        raise TypeError(f"engine returned {type(result).__name__}, expected a State")
    return result
