"""What is on disk: the latest run of every job of a pack, read from its output folder.

Each job folder ``<output_root>/<pack>/<job_id>/`` has ``latest`` pointing at its newest run
attempt, which holds ``record.json`` (the record) and ``result.json`` (the images). The
gallery and the contact sheets read only these, so they can be rebuilt at any time from
what is on disk, with no server running.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stablenew.outputs import LATEST, RESULT, SIDECAR, safe_name

# Folders under a pack's output folder that are not jobs (gallery output); job ids never
# start with "_" (they start with the pack id).
GRID_DIR = "_grid"


@dataclass(frozen=True, slots=True)
class ImageEntry:
    """One image of a job's latest run."""

    path: Path
    seed: int | None
    width: int | None
    height: int | None
    infotext: str


@dataclass(frozen=True, slots=True)
class JobEntry:
    """A job as its latest output folder shows it."""

    pack_id: str
    job_id: str
    run_dir: Path
    record: dict[str, Any]
    images: tuple[ImageEntry, ...]
    flow_run_id: str | None = None
    attempt: int | None = None
    status: str = "completed"
    extra: dict[str, Any] = field(default_factory=dict)

    @property
    def slots(self) -> dict[str, str]:
        return dict(self.record.get("matrix_slot_values") or {})

    @property
    def sort_key(self) -> tuple[int, int, int, int, str]:
        r = self.record
        return (
            int(r.get("row_index", 0)),
            int(r.get("combo_index", 0)),
            int(r.get("variant_index", 0)),
            int(r.get("batch_index", 0)),
            self.job_id,
        )


def pack_dir(output_root: Path, pack_id: str) -> Path:
    return output_root / safe_name(pack_id)


def read_job(job: Path) -> JobEntry | None:
    """The job in folder ``job`` from its ``latest`` run; None if it has no complete run."""
    run = job / LATEST
    try:
        record = json.loads((run / SIDECAR).read_text(encoding="utf-8"))
        result = json.loads((run / RESULT).read_text(encoding="utf-8"))
    except (OSError, ValueError):
        return None  # not a job folder, or a run still being written
    run_dir = run.resolve()
    images = tuple(
        ImageEntry(
            path=run_dir / safe_name(str(img.get("file", ""))),
            seed=img.get("seed"),
            width=img.get("width"),
            height=img.get("height"),
            infotext=str(img.get("infotext") or ""),
        )
        for img in result.get("images", [])
    )
    return JobEntry(
        pack_id=str(record.get("pack_id", job.parent.name)),
        job_id=str(record.get("job_id", job.name)),
        run_dir=run_dir,
        record=record,
        images=tuple(i for i in images if i.path.is_file()),
        flow_run_id=result.get("flow_run_id"),
        attempt=result.get("attempt"),
    )


def scan_pack(output_root: Path, pack_id: str) -> list[JobEntry]:
    """Every job of the pack with a finished run, in pack order (row, combo, variant, batch)."""
    directory = pack_dir(output_root, pack_id)
    if not directory.is_dir():
        return []
    jobs = [
        entry
        for child in directory.iterdir()
        if child.is_dir() and not child.name.startswith(("_", "."))
        if (entry := read_job(child)) is not None
    ]
    return sorted(jobs, key=lambda j: j.sort_key)


def list_packs(output_root: Path) -> list[str]:
    """Pack folders under the output root that hold at least one job, by name."""
    if not output_root.is_dir():
        return []
    return sorted(
        p.name
        for p in output_root.iterdir()
        if p.is_dir() and not p.name.startswith(("_", ".")) and any(p.glob(f"*/{LATEST}"))
    )
