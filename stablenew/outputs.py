"""Where a job's files go, and writing them: ``<output_root>/<pack>/<job_id>/``.

Directory names come from sanitized record fields and the result is checked to lie inside
the output root, so nothing in a pack (or a hand-built record) can write elsewhere. Files are
written to a temporary name and renamed, so a crash never leaves a half-written image.
"""

from __future__ import annotations

import json
import os
import re
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

from stablenew.records import NormalizedJobRecord

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SIDECAR = "record.json"
RESULT = "result.json"


def safe_name(value: str, *, fallback: str = "_") -> str:
    """One path component: no separators, no leading dots, bounded length."""
    cleaned = _UNSAFE.sub("_", value).lstrip(".")[:120]
    return cleaned or fallback


def job_dir(output_root: Path, record: NormalizedJobRecord) -> Path:
    root = output_root.resolve()
    target = (root / safe_name(record.pack_id) / safe_name(record.job_id)).resolve()
    if not target.is_relative_to(root):  # pragma: no cover - safe_name already prevents it
        raise ValueError(f"refusing to write outside the output root: {target}")
    return target


@dataclass(frozen=True, slots=True)
class OutputImage:
    """One final image as the WebUI returned it (PNG bytes with the infotext chunk)."""

    png: bytes
    seed: int | None
    infotext: str
    width: int | None = None
    height: int | None = None


@dataclass(frozen=True, slots=True)
class WrittenImage:
    path: Path
    seed: int | None
    infotext: str
    width: int | None
    height: int | None


def _atomic_write(path: Path, data: bytes) -> None:
    tmp = path.with_name(f".{path.name}.tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def write_job_outputs(
    output_root: Path, record: NormalizedJobRecord, images: Sequence[OutputImage]
) -> list[WrittenImage]:
    """Write the images, ``record.json`` (the record exactly as built) and ``result.json``."""
    directory = job_dir(output_root, record)
    directory.mkdir(parents=True, exist_ok=True)
    written: list[WrittenImage] = []
    for i, image in enumerate(images):
        path = directory / f"{i:03d}.png"
        _atomic_write(path, image.png)
        written.append(WrittenImage(path, image.seed, image.infotext, image.width, image.height))
    _atomic_write(directory / SIDECAR, record.model_dump_json(indent=2).encode())
    result = [
        {
            "file": w.path.name,
            "seed": w.seed,
            "width": w.width,
            "height": w.height,
            "infotext": w.infotext,
        }
        for w in written
    ]
    _atomic_write(directory / RESULT, json.dumps(result, indent=2, ensure_ascii=False).encode())
    return written
