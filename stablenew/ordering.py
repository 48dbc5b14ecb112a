"""The order in which one submission's jobs should reach the GPU.

Loading a checkpoint takes seconds on a real WebUI (far longer than an SD1.5 image), so a pack
that interleaves models pays a switch per job. Grouping jobs that share a checkpoint (and VAE)
keeps each model loaded for its whole group; inside a group, and between groups, the pack's
own order is kept, so the first model in the pack still renders first.
"""

from __future__ import annotations

import itertools
from collections.abc import Sequence

from stablenew.records import NormalizedJobRecord

_ModelKey = tuple[str, str | None]


def _model_key(record: NormalizedJobRecord) -> _ModelKey:
    return (record.model, record.vae)


def group_by_model(records: Sequence[NormalizedJobRecord]) -> list[int]:
    """Indexes into ``records``: jobs of the first-seen checkpoint first, then the next, ...

    Stable: within a checkpoint the input order is kept.
    """
    rank: dict[_ModelKey, int] = {}
    for record in records:
        rank.setdefault(_model_key(record), len(rank))
    return sorted(range(len(records)), key=lambda i: rank[_model_key(records[i])])


def model_switches(records: Sequence[NormalizedJobRecord]) -> int:
    """Checkpoint/VAE changes a single GPU makes rendering ``records`` in this order."""
    return sum(1 for a, b in itertools.pairwise(records) if _model_key(a) != _model_key(b))
