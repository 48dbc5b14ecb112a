"""``count_jobs``: how many jobs a pack makes, by multiplying counts (nothing is expanded)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from stablenew.builder.build import PackSource, as_loaded
from stablenew.builder.plan import plan_pack


def count_jobs(pack: PackSource, *, generation_defaults: Mapping[str, Any] | None = None) -> int:
    """Jobs the pack expands to: per row, variants * matrix combinations * images_per_prompt.

    ``limits`` are not enforced here (the count is what you compare them with); every other
    problem raises :class:`PackError` as in :func:`build_jobs`.
    """
    plan = plan_pack(as_loaded(pack), generation_defaults, enforce_limits=False)
    return plan.total


def validate_pack(pack: PackSource, *, generation_defaults: Mapping[str, Any] | None = None) -> int:
    """Run every check :func:`build_jobs` runs, limits included; return the job count."""
    return plan_pack(as_loaded(pack), generation_defaults, enforce_limits=True).total
