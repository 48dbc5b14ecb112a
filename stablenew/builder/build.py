"""``build_jobs``: a pack in, a stream of :class:`NormalizedJobRecord` out.

Every check runs in :func:`plan_pack` before the iterator is returned, so a bad pack raises
and yields nothing. The stream holds one row's plan at a time, never the job list, so memory
stays flat however many jobs a pack expands to. Each row's job-invariant fields are validated
once, in a prototype record; a job is ``prototype.model_copy(update=per-job fields)`` with the
id ``compute_job_id`` gives for that content (see ``_job_id``), so a built record equals the one
``NormalizedJobRecord.model_validate`` would make from the same fields.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Mapping
from typing import Any

from stablenew.builder.matrix import to_format
from stablenew.builder.plan import PackPlan, plan_pack
from stablenew.builder.seeds import seed_stream
from stablenew.errors import PackError
from stablenew.packs.loader import LoadedPack, load_pack
from stablenew.records import NormalizedJobRecord

PackSource = LoadedPack | str | os.PathLike[str]


def as_loaded(pack: PackSource) -> LoadedPack:
    """Accept a loaded pack or a path to one."""
    return pack if isinstance(pack, LoadedPack) else load_pack(pack)


def build_jobs(
    pack: PackSource, *, generation_defaults: Mapping[str, Any] | None = None
) -> Iterator[NormalizedJobRecord]:
    """Validate ``pack`` completely, then stream its job records in a deterministic order.

    Order: prompt row, then prompt variant, then matrix combination, then batch index.
    ``generation_defaults`` is the settings-file layer of the precedence; ``None`` reads
    ``get_settings().generation``, ``{}`` skips it. Raises :class:`PackError` up front.
    """
    plan = plan_pack(as_loaded(pack), generation_defaults, enforce_limits=True)
    return _emit(plan)


def _emit(plan: PackPlan) -> Iterator[NormalizedJobRecord]:
    spec = plan.pack.spec
    seeds = seed_stream(spec.seed, spec.pack)
    names = plan.slot_names
    for row in plan.rows:
        copy, job_id = row.prototype.model_copy, row.job_id
        for v, text in enumerate(row.expansion):
            template = to_format(text, names) if row.slot_template else None
            for c, values in enumerate(row.combos):
                prompt = (template.format_map(values) if template else text) + row.suffix
                if not prompt.strip():
                    raise PackError(
                        [plan.pack.issue(("prompts", row.index, "text"), "a non-blank prompt")]
                    )
                negative = row.negative.format_map(values) if row.slot_template else row.negative
                for b in range(row.images):
                    per_job: dict[str, Any] = {
                        "combo_index": c,
                        "variant_index": v,
                        "batch_index": b,
                        "prompt": prompt,
                        "negative_prompt": negative,
                        "matrix_slot_values": dict(values),
                        "seed": next(seeds),
                    }
                    per_job["job_id"] = job_id(per_job)
                    yield copy(update=per_job)
