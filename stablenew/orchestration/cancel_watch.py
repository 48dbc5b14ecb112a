"""The in-process worker's cancel watch.

Prefect marks a run CANCELLING; the watch notices with one state read per tick for all runs
in flight (not one per run), sets the run's cancel event (see ``cancellation``), interrupts
the WebUI if that run holds the GPU, and makes sure the run ends CANCELLED.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Callable
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

from stablenew.orchestration import cancellation

CANCEL_POLL_SECONDS = 0.5
CANCEL_GRACE_SECONDS = 15.0

Interrupter = Callable[[], None]


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
    ) -> None:
        self._client = client
        self._task_group = task_group
        self._holds_gpu = holds_gpu
        self._interrupter = interrupter
        self._run_logger = run_logger
        self._logger = logger
        self._in_flight: dict[UUID, tuple[FlowRun, threading.Event]] = {}
        self._watching = False

    def track(self, flow_run: FlowRun) -> None:
        """Watch ``flow_run`` from its claim on (again: no change), so a cancel reaches it
        even while something between the claim and its start is slow."""
        if flow_run.id in self._in_flight:
            return
        self._in_flight[flow_run.id] = (flow_run, cancellation.register(flow_run.id))
        if not self._watching:
            self._watching = True
            self._task_group.start_soon(self._watch)

    def cancelled(self, flow_run_id: UUID) -> bool:
        """Whether the watch has seen ``flow_run_id`` CANCELLING."""
        entry = self._in_flight.get(flow_run_id)
        return entry is not None and entry[1].is_set()

    def untrack(self, flow_run_id: UUID) -> None:
        self._in_flight.pop(flow_run_id, None)
        cancellation.unregister(flow_run_id)

    async def _watch(self) -> None:
        handled: set[UUID] = set()
        while True:
            await anyio.sleep(CANCEL_POLL_SECONDS)
            ids = [i for i in self._in_flight if i not in handled]
            handled &= set(self._in_flight)
            if not ids:
                continue
            try:
                runs = await self._client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        id=FlowRunFilterId(any_=ids),
                        state=FlowRunFilterState(
                            type=FlowRunFilterStateType(any_=[StateType.CANCELLING])
                        ),
                    )
                )
            except Exception as exc:  # transient API trouble: try again next tick
                self._logger.debug("cancel watch failed: %r", exc)
                continue
            for run in runs:
                entry = self._in_flight.get(run.id)
                if entry is not None:
                    handled.add(run.id)
                    await self._cancel(*entry)

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

    async def _enforce_cancelled(self, flow_run_id: UUID) -> None:
        """The flow should end itself CANCELLED; if it has not after a grace period, do it."""
        with anyio.move_on_after(CANCEL_GRACE_SECONDS):
            while flow_run_id in self._in_flight:
                await anyio.sleep(0.1)
            return
        await self._client.set_flow_run_state(
            flow_run_id, Cancelled(message="cancelled by the worker"), force=True
        )
