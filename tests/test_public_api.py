"""The public SDK surface: pinned, importable, and the core importable without Prefect."""

from __future__ import annotations

import subprocess
import sys

import stablenew

EXPECTED = [
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
]  # fmt: skip


def test_all_is_pinned_and_sorted() -> None:
    assert stablenew.__all__ == sorted(stablenew.__all__)
    assert stablenew.__all__ == EXPECTED


def test_every_public_name_resolves() -> None:
    for name in stablenew.__all__:
        assert getattr(stablenew, name) is not None, name


def test_core_and_sdk_import_without_prefect() -> None:
    code = (
        "import sys, stablenew, stablenew.builder, stablenew.packs, stablenew.records;"
        "print('prefect' in sys.modules)"
    )
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "False"
