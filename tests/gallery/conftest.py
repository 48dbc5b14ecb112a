"""Output folders as a worker writes them, without a worker: records built from a pack, each
given a distinct image (stripes of its own colours, so cells can be told apart)."""

from __future__ import annotations

import io
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import pytest
import yaml
from PIL import Image, ImageDraw

from stablenew.builder import build_jobs
from stablenew.outputs import OutputImage, RunStamp, write_job_outputs
from stablenew.packs import LoadedPack, load_pack
from stablenew.records import NormalizedJobRecord

ROOT = Path(__file__).resolve().parents[2]
FOX = ROOT / "configs" / "packs" / "fox-matrix.yaml"
WILDCARDS = ROOT / "configs" / "wildcards"


def job_image(n: int, size: int = 512) -> bytes:
    """A PNG unlike any other n's: two colours in diagonal stripes of an n-dependent width."""
    a = ((n * 67) % 256, (n * 131 + 40) % 256, (n * 29 + 200) % 256)
    b = (255 - a[0], 255 - a[1], 255 - a[2])
    img = Image.new("RGB", (size, size), a)
    draw = ImageDraw.Draw(img)
    step = 24 + 8 * (n % 7)
    for x in range(-size, size, step * 2):
        draw.polygon([(x, 0), (x + step, 0), (x + step + size, size), (x + size, size)], fill=b)
    buf = io.BytesIO()
    img.save(buf, "PNG")
    return buf.getvalue()


def pack_file(tmp_path: Path, **changes: Any) -> Path:
    """fox-matrix.yaml with ``changes`` applied, written under ``tmp_path``."""
    data = yaml.safe_load(FOX.read_text(encoding="utf-8"))
    data["wildcards"] = str(WILDCARDS)
    data.update(changes)
    path = tmp_path / f"{data['pack']}.yaml"
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def write_outputs(
    root: Path, records: Sequence[NormalizedJobRecord], *, size: int = 512
) -> dict[str, bytes]:
    """Write one image per record as the worker would; job id -> its PNG bytes."""
    pngs: dict[str, bytes] = {}
    for n, record in enumerate(records):
        png = job_image(n, size)
        image = OutputImage(png, record.seed, f"{record.prompt}\nSeed: {record.seed}", size, size)
        write_job_outputs(root, record, [image], RunStamp(f"flow-run-{n:012d}"))
        pngs[record.job_id] = png
    return pngs


@pytest.fixture
def fox() -> tuple[LoadedPack, list[NormalizedJobRecord]]:
    pack = load_pack(FOX)
    return pack, list(build_jobs(pack))
