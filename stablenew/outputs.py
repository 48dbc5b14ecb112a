"""Where a job's files go, and writing them.

A job may run many times (re-run, retry, recovery), and no run overwrites another's files:
each run attempt writes its own folder, ``<output_root>/<pack>/<job_id>/<UTC time>_<run>_a<N>/``
(``<UTC time>`` to the millisecond, so the folders list in the order they were written;
``<run>``: the end of its flow run id; ``N``: Prefect's attempt), and ``<job_id>/latest``
points at the newest. Each folder holds ``record.json`` (the record exactly as built) and
``result.json`` (which run and attempt made the images, and their seeds and infotext).

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
from datetime import UTC, datetime
from pathlib import Path

from stablenew.records import NormalizedJobRecord

_UNSAFE = re.compile(r"[^A-Za-z0-9._-]+")
SIDECAR = "record.json"
RESULT = "result.json"
LATEST = "latest"
_RUN_TAG_CHARS = 12  # the random end of a flow run id (its start is a timestamp in UUIDv7)


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
class RunStamp:
    """Which run attempt wrote a folder: its flow run id and Prefect's attempt number."""

    flow_run_id: str | None
    attempt: int = 1

    @property
    def tag(self) -> str:
        return (
            safe_name(self.flow_run_id.replace("-", "")[-_RUN_TAG_CHARS:], fallback="local")
            if self.flow_run_id
            else "local"
        )


def run_dir_name(stamp: RunStamp, at: datetime) -> str:
    # Milliseconds: two runs of a job can end within one second, and the folders should
    # still list in the order they were written.
    at = at.astimezone(UTC)
    return f"{at:%Y%m%dT%H%M%S}.{at.microsecond // 1000:03d}_{stamp.tag}_a{stamp.attempt}"


def run_dirs(output_root: Path, record: NormalizedJobRecord, flow_run_id: str) -> list[Path]:
    """The folders a run's attempts wrote, oldest first."""
    tag = RunStamp(flow_run_id).tag
    directory = job_dir(output_root, record)
    return sorted(p for p in directory.glob(f"*_{tag}_a*") if p.is_dir() and not p.is_symlink())


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


def _point_latest(job: Path, target: Path) -> None:
    """``<job>/latest`` -> ``target``, swapped atomically (readers never see it missing)."""
    tmp = job / f".{LATEST}.tmp"
    tmp.unlink(missing_ok=True)
    os.symlink(target.name, tmp, target_is_directory=True)
    os.replace(tmp, job / LATEST)


def write_job_outputs(
    output_root: Path,
    record: NormalizedJobRecord,
    images: Sequence[OutputImage],
    run: RunStamp | None = None,
) -> list[WrittenImage]:
    """Write the images, ``record.json`` (the record exactly as built) and ``result.json``
    into this run attempt's own folder, then point ``latest`` at it."""
    run = run or RunStamp(None)
    job = job_dir(output_root, record)
    directory = job / run_dir_name(run, datetime.now(UTC))
    directory.mkdir(parents=True, exist_ok=True)
    written: list[WrittenImage] = []
    for i, image in enumerate(images):
        path = directory / f"{i:03d}.png"
        _atomic_write(path, image.png)
        written.append(WrittenImage(path, image.seed, image.infotext, image.width, image.height))
    # record.json stays exactly the record (the job, the same for every run); the folder's
    # name and result.json say which run made the images.
    _atomic_write(directory / SIDECAR, record.model_dump_json(indent=2).encode())
    result = {
        "job_id": record.job_id,
        "flow_run_id": run.flow_run_id,
        "attempt": run.attempt,
        "images": [
            {
                "file": w.path.name,
                "seed": w.seed,
                "width": w.width,
                "height": w.height,
                "infotext": w.infotext,
            }
            for w in written
        ],
    }
    _atomic_write(directory / RESULT, json.dumps(result, indent=2, ensure_ascii=False).encode())
    _point_latest(job, directory)
    return written
