"""Bring a pack's contact sheets and galleries up to date with what is on disk.

One call for whoever knows a job of the pack finished (the ``run`` command as it watches
jobs, and at the end) and for ``stablenew grid`` / ``stablenew gallery``. It never runs on a
worker: sheets and thumbnails cost CPU, and the worker's CPU overlaps the GPU's next job.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from stablenew.gallery.html import PendingJob, write_index, write_pack_gallery
from stablenew.gallery.sheet import GridError, SheetSet, build_sheets, stored_axes
from stablenew.packs import LoadedPack


def pack_axes(pack: LoadedPack) -> dict[str, Any]:
    """:func:`build_sheets` keyword arguments from a pack: its ``grid`` and matrix order."""
    spec = pack.spec
    slots = {k: [str(v) for v in vs] for k, vs in spec.matrix.slots.items()} if spec.matrix else {}
    return {
        "x": spec.grid.x if spec.grid else None,
        "y": spec.grid.y if spec.grid else None,
        "slots": slots or None,
    }


@dataclass(frozen=True, slots=True)
class Refreshed:
    sheets: SheetSet | None
    gallery: Path
    index: Path


def refresh_pack(
    output_root: Path,
    pack_id: str,
    *,
    pack: LoadedPack | None = None,
    expected_jobs: int | None = None,
    pending: Sequence[PendingJob] = (),
) -> Refreshed:
    """Rebuild the pack's sheets (if it has matrix slots), its gallery and the top index."""
    axes = pack_axes(pack) if pack is not None else stored_axes(output_root, pack_id)
    try:
        sheets: SheetSet | None = build_sheets(
            output_root, pack_id, expected_jobs=expected_jobs, **axes
        )
    except GridError:
        sheets = None  # no matrix: a gallery, but no contact sheet
    gallery = write_pack_gallery(output_root, pack_id, pending)
    index = write_index(output_root, pending)
    return Refreshed(sheets, gallery, index)
