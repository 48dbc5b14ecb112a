"""The in-process worker's cancel watch.

Prefect marks a run CANCELLING; the watch notices with one state read per tick for all runs
in flight (not one per run), sets the run's cancel event (see ``cancellation``), interrupts
the WebUI if that run holds the GPU, and makes sure the run ends CANCELLED.

The same read finds runs that are no longer this worker's: put back in their queue or marked
CRASHED by the pool's recovery (which judged this worker dead), claimed by another worker, or
ended by someone else. Those are taken back: their flow stops without writing a state.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Awaitable, Callable
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterId,
    FlowRunFilterState,
    FlowRunFilterStateType,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Cancelled

from stablenew.orchestration.worker import cancellation
from stablenew.orchestration.worker.recovery import claimant

CANCEL_POLL_SECONDS = 0.5
CANCEL_GRACE_SECONDS = 15.0

Interrupter = Callable[[], None]
# Reads the runs of the given ids that are neither PENDING nor RUNNING in a way of its own
# (ScheduledRuns.look); None: it cannot, read them with Prefect's filter.
Look = Callable[[list[UUID]], Awaitable[list[FlowRun] | None]]


class CancelWatch:
    """Runs in flight and their cancel events; the watch loop starts with the first run."""

    def __init__(
        self,
        client: PrefectClient,
        task_group: anyio.abc.TaskGroup,
        *,
        holds_gpu: Callable[[UUID], bool],
        interrupter: Interrupter | None,
        run_logger: Callable[[FlowRun], Any],
        logger: logging.Logger | logging.LoggerAdapter[logging.Logger],
        worker_name: str,
        look: Look | None = None,
    ) -> None:
        self._client = client
        self._look = look
        self._worker_name = worker_name
        self._task_group = task_group
        self._holds_gpu = holds_gpu
        self._interrupter = interrupter
        self._run_logger = run_logger
        self._logger = logger
        self._in_flight: dict[UUID, tuple[FlowRun, threading.Event]] = {}
        self._watching = False
        self._handled: set[UUID] = set()  # cancelled or taken back: acted on once

    def track(self, flow_run: FlowRun) -> None:
        """Watch ``flow_run`` from its claim on (again: no change), so a cancel reaches it
        even while something between the claim and its start is slow."""
        if flow_run.id in self._in_flight:
            return
        self._in_flight[flow_run.id] = (flow_run, cancellation.register(flow_run.id))
        if not self._watching:
            self._watching = True
            self._task_group.start_soon(self._watch)

    def tracks(self, flow_run_id: UUID) -> bool:
        return flow_run_id in self._in_flight

    def tracked(self) -> list[UUID]:
        return list(self._in_flight)

    def cancelled(self, flow_run_id: UUID) -> bool:
        """Whether the watch has seen ``flow_run_id`` CANCELLING."""
        entry = self._in_flight.get(flow_run_id)
        return entry is not None and entry[1].is_set()

    def untrack(self, flow_run_id: UUID) -> None:
        self._in_flight.pop(flow_run_id, None)
        cancellation.unregister(flow_run_id)

    async def _watch(self) -> None:
        while True:
            await anyio.sleep(CANCEL_POLL_SECONDS)
            ids = [i for i in self._in_flight if i not in self._handled]
            self._handled &= set(self._in_flight)
            if not ids:
                continue
            try:
                # PENDING (staged) and RUNNING (generating) are what every run in flight
                # is: left out, the answer is usually empty. A run put back and claimed or
                # started by another worker passes through SCHEDULED first; if no tick fell
                # then, the GPU grant's start of the run finds it (and cuts a generation of
                # it short).
                runs = await self._look(ids) if self._look is not None else None
                if runs is None:
                    runs = await read_left(self._client, ids)
            except Exception as exc:  # transient API trouble: try again next tick
                self._logger.debug("cancel watch failed: %r", exc)
                continue
            for run in runs:
                await self.judge(run, started=False)

    async def judge(self, run: FlowRun, *, started: bool) -> None:
        """Act on ``run`` as read from the API, unless it is still ours (RUNNING here, or
        claimed here and not ``started`` yet): cancel it if CANCELLING, else take it back."""
        entry = self._in_flight.get(run.id)
        if entry is None or run.id in self._handled:
            return
        mine = claimant(run) == self._worker_name
        if run.state_type == StateType.CANCELLING:
            self._handled.add(run.id)
            await self._cancel(*entry)
        elif mine and (
            run.state_type == StateType.RUNNING
            or (run.state_type == StateType.PENDING and not started)
        ):
            return
        else:
            self._handled.add(run.id)
            await self.take_back(run)

    async def _cancel(self, flow_run: FlowRun, cancel_event: threading.Event) -> None:
        self._run_logger(flow_run).info("Cancel requested: stopping the job")
        cancel_event.set()
        # Only the run holding the GPU is generating; interrupting for a staged one would
        # stop somebody else's image.
        if self._interrupter is not None and self._holds_gpu(flow_run.id):
            try:
                await anyio.to_thread.run_sync(self._interrupter)
            except Exception as exc:
                self._logger.warning("WebUI interrupt failed: %s", exc)
        self._task_group.start_soon(self._enforce_cancelled, flow_run.id)

    async def take_back(self, run: FlowRun) -> None:
        """``run`` is no longer this worker's (see the module doc): its flow stops without
        writing anything, and a generation of it is interrupted, nobody will take it."""
        state = run.state
        reason = f"{state.name}: {state.message}" if state else "no state"
        if not cancellation.take_back(run.id, reason):
            return  # it left this worker while the answer was on its way
        interrupter = self._interrupter if self._holds_gpu(run.id) else None
        if state is not None and state.is_final() and interrupter is None:
            return  # usually the run's own end, seen before the worker let go of it
        self._run_logger(run).warning(
            "Taken back from %s (%s); it no longer runs here", self._worker_name, reason
        )
        if interrupter is not None:
            try:
                await anyio.to_thread.run_sync(interrupter)
            except Exception as exc:
                self._logger.warning("WebUI interrupt failed: %s", exc)

    async def _enforce_cancelled(self, flow_run_id: UUID) -> None:
        """The flow should end itself CANCELLED; if it has not after a grace period, do it."""
        with anyio.move_on_after(CANCEL_GRACE_SECONDS):
            while flow_run_id in self._in_flight:
                await anyio.sleep(0.1)
            return
        try:
            await self._client.set_flow_run_state(
                flow_run_id, Cancelled(message="cancelled by the worker"), force=True
            )
        except Exception as exc:  # a failure here must not stop the worker's task group
            self._logger.warning("could not end cancelled run %s: %r", flow_run_id, exc)


async def read_left(client: PrefectClient, ids: list[UUID]) -> list[FlowRun]:
    """The runs of ``ids`` that are neither PENDING nor RUNNING, by Prefect's filter."""
    return await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(
            id=FlowRunFilterId(any_=ids),
            state=FlowRunFilterState(
                type=FlowRunFilterStateType(not_any_=[StateType.PENDING, StateType.RUNNING])
            ),
        )
    )
