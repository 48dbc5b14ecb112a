"""StableNew: prompt packs to Stable Diffusion images at scale, orchestrated by Prefect.

The public SDK is what ``__all__`` lists; everything else may change without notice.
"""

from stablenew.errors import (
    ConfigError,
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
from stablenew.records import LoraRef, NormalizedJobRecord, StageSpec
from stablenew.settings import Settings, get_settings, load_settings

__version__ = "0.1.0"

__all__ = [
    "ConfigError",
    "HistoryError",
    "JobNotFound",
    "LoraRef",
    "NormalizedJobRecord",
    "OrchestrationError",
    "PackError",
    "PackIssue",
    "PrefectUnavailable",
    "Settings",
    "StableNewError",
    "StageSpec",
    "SubmissionError",
    "WebUIAuthError",
    "WebUIError",
    "WebUIInterrupted",
    "WebUIOutOfMemory",
    "WebUIRequestRejected",
    "WebUIServerError",
    "WebUITimeout",
    "WebUIUnreachable",
    "get_settings",
    "load_settings",
]
