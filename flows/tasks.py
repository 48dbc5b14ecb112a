"""Prefect tasks wrapping core functions; the logic lives in ``stablenew``."""

from __future__ import annotations

from prefect import task

from stablenew.builder import build_jobs
from stablenew.packs import load_pack
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings


@task(name="build-jobs", retries=0, cache_policy=None, persist_result=False)
def build_jobs_task(pack_path: str) -> list[NormalizedJobRecord]:
    """Load and validate a pack, then build all its job records (PackError if invalid)."""
    return list(build_jobs(load_pack(pack_path), generation_defaults=get_settings().generation))
