"""Matrix slots: ``${name}`` references, their combinations, and filling them in.

Slot references are swapped for private-use sentinels before the text reaches the
dynamic-prompts parser (which has its own ``${var}`` syntax), and turned into a
``str.format`` template after expansion, so filling a combination in is one C-level call.
"""

from __future__ import annotations

import itertools
import math
import re
from collections.abc import Iterator, Sequence
from dataclasses import dataclass

from stablenew.packs.model import MatrixSpec

SLOT_RE = re.compile(r"\$\{([A-Za-z_][A-Za-z0-9_]*)\}")
_SENTINEL_RE = re.compile("\ue000(\\d+)\ue001")


def slot_names(text: str) -> list[str]:
    """Slot names referenced in ``text``, in order of appearance."""
    return SLOT_RE.findall(text)


def protect_slots(text: str, names: Sequence[str]) -> str:
    """Replace ``${name}`` by a sentinel the prompt parser treats as plain text."""
    return SLOT_RE.sub(lambda m: f"\ue000{names.index(m.group(1))}\ue001", text)


def to_format(text: str, names: Sequence[str]) -> str:
    """Expanded text with sentinels → a ``str.format_map`` template over slot names."""
    escaped = text.replace("{", "{{").replace("}", "}}")
    return _SENTINEL_RE.sub(lambda m: "{" + names[int(m.group(1))] + "}", escaped)


@dataclass(frozen=True)
class Combinations:
    """The matrix combinations one prompt row expands over."""

    names: tuple[str, ...]
    columns: tuple[tuple[str, ...], ...]
    zipped: bool

    @property
    def count(self) -> int:
        if not self.names:
            return 1
        if self.zipped:
            return len(self.columns[0])
        return math.prod(len(c) for c in self.columns)

    def __iter__(self) -> Iterator[dict[str, str]]:
        if not self.names:
            return iter(({},))
        rows = zip(*self.columns, strict=True) if self.zipped else itertools.product(*self.columns)
        return (dict(zip(self.names, row, strict=True)) for row in rows)


def combinations(matrix: MatrixSpec | None, referenced: set[str]) -> Combinations:
    """cartesian: every combination of the referenced slots; zip: row i of every slot.

    A row that references no slot gets a single, empty combination.
    """
    if matrix is None or not referenced:
        return Combinations((), (), zipped=False)
    zipped = matrix.mode == "zip"
    names = tuple(n for n in matrix.slots if zipped or n in referenced)
    return Combinations(names, tuple(tuple(matrix.slots[n]) for n in names), zipped)
