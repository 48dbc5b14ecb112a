"""How a render run tells about its waits and retries: log lines on the run's logger, and
while it waits for its WebUI, a RUNNING state named ``Waiting for WebUI`` with the reason
(plain ``Running`` again once the WebUI is back), so the Prefect UI, ``stablenew queue`` and
the run's state history show it.

Prefect counts every entry into RUNNING as a new try of the run (``run_count``, the attempt
number the history shows), unless the run is marked as resuming: these states are the same
attempt going on, so the mark is set first, with the tag ``waited-for-webui`` (the exporter
then reads the run's state history, so each wait is a transition with its reason). These
requests happen only when a run waits.
"""

from __future__ import annotations

import logging
from typing import Any
from uuid import UUID

from prefect.client.orchestration import get_client
from prefect.client.schemas.objects import StateType
from prefect.client.schemas.responses import OrchestrationResult, SetStateStatus
from prefect.states import Running

from stablenew.orchestration.services.tags import WAITED

WAITING_STATE = "Waiting for WebUI"
RUNNING_STATE = "Running"

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]


class PrefectRunNotes:
    """:class:`stablenew.orchestration.worker.render.RunNotes` for one flow run."""

    def __init__(self, log: Logger, flow_run_id: UUID | None) -> None:
        self._log = log
        self._id = flow_run_id
        self._waiting = False

    def waiting(self, reason: str) -> None:
        self._log.warning("Waiting for WebUI: %s", reason)
        if not self._waiting:
            self._waiting = self._propose(WAITING_STATE, reason)

    def resumed(self, message: str) -> None:
        self._log.info("%s", message)
        if self._waiting:
            self._propose(RUNNING_STATE, message)
            self._waiting = False

    def retrying(self, message: str) -> None:
        self._log.warning("%s", message)

    def _propose(self, name: str, message: str) -> bool:
        """Set a RUNNING state named ``name`` on a run that is RUNNING; whether it was set.
        Best effort: a failure is logged at debug level and never stops the job."""
        if self._id is None:
            return False
        try:
            with get_client(sync_client=True) as client:
                run = client.read_flow_run(self._id)
                if run.state is None or run.state.type != StateType.RUNNING:
                    return False  # cancelling (or already ended): leave that state alone
                policy = run.empirical_policy.model_copy(update={"resuming": True})
                # The tag tells the history exporter to read this run's state history.
                tags = sorted({*(run.tags or ()), WAITED})
                client.update_flow_run(self._id, empirical_policy=policy, tags=tags)
                result: OrchestrationResult[Any] = client.set_flow_run_state(
                    self._id, Running(name=name, message=message[:2000])
                )
                return result.status == SetStateStatus.ACCEPT
        except Exception as exc:  # bookkeeping must never fail a job
            self._log.debug("could not set the run's state to %r: %r", name, exc)
            return False
