"""Job history: a durable, queryable record of every job, its runs and their transitions.

Core layer: imports neither Prefect nor HTTP. The exporter (orchestration) fills it from the
Prefect API; the history service and CLI read it.
"""

from stablenew.errors import AmbiguousJobId
from stablenew.history.base import HistoryStore
from stablenew.history.models import (
    FilterArgs,
    JobFilter,
    JobRow,
    Page,
    Rating,
    RunRow,
    StatusEvent,
    Submission,
    Transition,
    WriteStats,
)
from stablenew.history.sqlite import SqliteHistoryStore, open_store

__all__ = [
    "AmbiguousJobId",
    "FilterArgs",
    "HistoryStore",
    "JobFilter",
    "JobRow",
    "Page",
    "Rating",
    "RunRow",
    "SqliteHistoryStore",
    "StatusEvent",
    "Submission",
    "Transition",
    "WriteStats",
    "open_store",
]
