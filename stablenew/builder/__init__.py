"""The builder: a validated pack in, a deterministic stream of job records out.

Pure core code: it imports neither Prefect nor HTTP. ``flows/tasks.py`` wraps it as a task.
"""

from __future__ import annotations

from stablenew.builder.build import build_jobs
from stablenew.builder.count import count_jobs, validate_pack
from stablenew.builder.merge import BUILTIN_DEFAULTS, merge_settings

__all__ = ["BUILTIN_DEFAULTS", "build_jobs", "count_jobs", "merge_settings", "validate_pack"]
