"""Prefect tasks wrapping core functions; the logic lives in ``stablenew``."""

from __future__ import annotations

from pathlib import Path

from prefect import task

from stablenew.builder import build_jobs
from stablenew.orchestration.services.deployments import project_root
from stablenew.packs import load_pack
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings


@task(name="build-jobs", retries=0, cache_policy=None, persist_result=False)
def build_jobs_task(pack_path: str) -> list[NormalizedJobRecord]:
    """Load and validate a pack (a relative path is the project's: a worker runs wherever it
    was started), then build all its job records (PackError if invalid)."""
    path = Path(pack_path)
    if not path.is_absolute():
        path = project_root() / path
    return list(build_jobs(load_pack(path), generation_defaults=get_settings().generation))
