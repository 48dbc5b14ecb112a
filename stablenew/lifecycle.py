"""Job lifecycle: our statuses, the one mapping from Prefect state types, and the legal moves.

Prefect is the state store; this module only interprets it. State types arrive as strings
(``"RUNNING"``) so the core never imports Prefect.
"""

from __future__ import annotations

import logging
from enum import StrEnum

logger = logging.getLogger(__name__)


class JobStatus(StrEnum):
    SUBMITTED = "submitted"  # record accepted, flow run not yet created
    QUEUED = "queued"
    RUNNING = "running"
    CANCELLING = "cancelling"  # transitional: cancel requested, run not yet stopped
    COMPLETED = "completed"
    FAILED = "failed"
    CANCELLED = "cancelled"

    @property
    def is_terminal(self) -> bool:
        return self in _TERMINAL

    @property
    def is_active(self) -> bool:
        return self in (JobStatus.QUEUED, JobStatus.RUNNING, JobStatus.CANCELLING)


_TERMINAL = frozenset({JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED})

_FROM_PREFECT: dict[str, JobStatus] = {
    "SCHEDULED": JobStatus.QUEUED,
    "PENDING": JobStatus.QUEUED,
    "PAUSED": JobStatus.QUEUED,
    "RUNNING": JobStatus.RUNNING,
    "COMPLETED": JobStatus.COMPLETED,
    "FAILED": JobStatus.FAILED,
    "CRASHED": JobStatus.FAILED,
    "CANCELLING": JobStatus.CANCELLING,
    "CANCELLED": JobStatus.CANCELLED,
}


def status_from_prefect(state_type: str | None) -> JobStatus:
    """The one place a Prefect state type becomes a :class:`JobStatus`.

    ``None`` (a run with no state yet) counts as queued. Accepts ``StateType`` members too,
    since they are string enums.
    """
    if state_type is None:
        return JobStatus.QUEUED
    key = str(getattr(state_type, "value", state_type)).upper()
    try:
        return _FROM_PREFECT[key]
    except KeyError:
        raise ValueError(f"unknown Prefect state type {state_type!r}") from None


# CANCELLING is where a cancel of a queued or running job passes through on its way to
# CANCELLED; it may also still end COMPLETED/FAILED if the run finished first.
_ALLOWED: dict[JobStatus, frozenset[JobStatus]] = {
    JobStatus.SUBMITTED: frozenset({JobStatus.QUEUED, JobStatus.CANCELLED}),
    JobStatus.QUEUED: frozenset(
        {JobStatus.RUNNING, JobStatus.CANCELLING, JobStatus.CANCELLED, JobStatus.FAILED}
    ),
    # RUNNING -> QUEUED: the run went back to its queue (its worker stopped or died before it
    # generated); its next attempt waits there.
    JobStatus.RUNNING: frozenset(
        {
            JobStatus.COMPLETED,
            JobStatus.FAILED,
            JobStatus.CANCELLING,
            JobStatus.CANCELLED,
            JobStatus.QUEUED,
        }
    ),
    JobStatus.CANCELLING: frozenset({JobStatus.CANCELLED, JobStatus.COMPLETED, JobStatus.FAILED}),
    JobStatus.COMPLETED: frozenset(),
    JobStatus.FAILED: frozenset(),
    JobStatus.CANCELLED: frozenset(),
}


def is_legal_transition(old: JobStatus, new: JobStatus) -> bool:
    """Staying put is legal (repeated reports); everything else must be in the table."""
    return old == new or new in _ALLOWED[old]


def check_transition(job_id: str, old: JobStatus, new: JobStatus) -> bool:
    """Validate a move; an illegal one is logged with both states and the job id.

    Returns whether it was legal. Callers still record what Prefect reports (Prefect is the
    truth), but never silently: the log line is the audit trail.
    """
    if is_legal_transition(old, new):
        return True
    logger.warning("illegal transition for job %s: %s -> %s", job_id, old.value, new.value)
    return False
