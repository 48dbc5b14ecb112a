"""Seed policies: one seed per job, in build order, deterministic for a given pack."""

from __future__ import annotations

import itertools
import random
from collections.abc import Iterator

from stablenew.packs.model import SeedSpec
from stablenew.records import MAX_SEED


def seed_stream(spec: SeedSpec, pack_id: str) -> Iterator[int]:
    """Seeds for jobs 0, 1, 2, ...

    fixed: ``base`` for every job; increment: ``base + n`` (wrapping at 2**32);
    random: drawn from ``random.Random`` seeded by the pack id and ``base``, so the same pack
    always draws the same seeds (each is recorded on its record).
    """
    if spec.policy == "fixed":
        return itertools.repeat(spec.base)
    if spec.policy == "increment":
        return ((spec.base + n) & MAX_SEED for n in itertools.count())
    rng = random.Random(f"stablenew-seed:{pack_id}:{spec.base}")
    return iter(lambda: rng.getrandbits(32), None)
