"""StableNew: prompt packs to Stable Diffusion images at scale, orchestrated by Prefect.

The public SDK is what ``__all__`` lists; everything else may change without notice.
"""

from typing import TYPE_CHECKING, Any

from stablenew.builder import build_jobs, count_jobs, validate_pack
from stablenew.errors import (
    AmbiguousJobId,
    ConfigError,
    DuplicateJob,
    HistoryError,
    JobNotFound,
    OrchestrationError,
    PackError,
    PackIssue,
    PrefectUnavailable,
    StableNewError,
    SubmissionError,
    WebUIAuthError,
    WebUIError,
    WebUIInterrupted,
    WebUIOutOfMemory,
    WebUIRequestRejected,
    WebUIServerError,
    WebUITimeout,
    WebUIUnreachable,
)
from stablenew.history import SqliteHistoryStore, open_store
from stablenew.history.learn import LearnReport, learn
from stablenew.lifecycle import JobStatus, status_from_prefect
from stablenew.packs import load_pack
from stablenew.records import LoraRef, NormalizedJobRecord, StageSpec
from stablenew.settings import Settings, get_settings, load_settings
from stablenew.webui import JobResult, WebUIClient, run_stages

if TYPE_CHECKING:
    from stablenew.orchestration.services.history_service import (
        Explanation,
        JobDetail,
        JobHistoryService,
        JobView,
        RunView,
    )
    from stablenew.orchestration.services.jobs import JobService
    from stablenew.orchestration.services.queue_view import JobRef, QueueState

# The orchestration layer imports Prefect (~2 s); load it only when one of these is used.
_LAZY = {
    "JobService": "stablenew.orchestration.services.jobs",
    "JobRef": "stablenew.orchestration.services.queue_view",
    "QueueState": "stablenew.orchestration.services.queue_view",
    "JobHistoryService": "stablenew.orchestration.services.history_service",
    "JobView": "stablenew.orchestration.services.history_service",
    "JobDetail": "stablenew.orchestration.services.history_service",
    "RunView": "stablenew.orchestration.services.history_service",
    "Explanation": "stablenew.orchestration.services.history_service",
}


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        import importlib

        return getattr(importlib.import_module(_LAZY[name]), name)
    raise AttributeError(f"module 'stablenew' has no attribute {name!r}")


__version__ = "0.1.0"

__all__ = [
    "AmbiguousJobId",
    "ConfigError",
    "DuplicateJob",
    "Explanation",
    "HistoryError",
    "JobDetail",
    "JobHistoryService",
    "JobNotFound",
    "JobRef",
    "JobResult",
    "JobService",
    "JobStatus",
    "JobView",
    "LearnReport",
    "LoraRef",
    "NormalizedJobRecord",
    "OrchestrationError",
    "PackError",
    "PackIssue",
    "PrefectUnavailable",
    "QueueState",
    "RunView",
    "Settings",
    "SqliteHistoryStore",
    "StableNewError",
    "StageSpec",
    "SubmissionError",
    "WebUIAuthError",
    "WebUIClient",
    "WebUIError",
    "WebUIInterrupted",
    "WebUIOutOfMemory",
    "WebUIRequestRejected",
    "WebUIServerError",
    "WebUITimeout",
    "WebUIUnreachable",
    "build_jobs",
    "count_jobs",
    "get_settings",
    "learn",
    "load_pack",
    "load_settings",
    "open_store",
    "run_stages",
    "status_from_prefect",
    "validate_pack",
]
