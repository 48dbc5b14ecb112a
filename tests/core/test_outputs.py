"""Run folders of one job list in the order they were written, even within one second."""

from __future__ import annotations

import io
from pathlib import Path

from PIL import Image

from stablenew.outputs import LATEST, OutputImage, RunStamp, write_job_outputs
from tests.core.history_support import make_record


def _png() -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", (8, 8)).save(buffer, format="PNG")
    return buffer.getvalue()


def test_runs_written_within_one_second_list_oldest_first(tmp_path: Path) -> None:
    record = make_record()
    image = OutputImage(png=_png(), seed=1, infotext="x")
    # Run ids whose random ends sort against the order of writing (seen in CI: the folders
    # of two runs ending in the same second sorted by their run ids, not their time).
    runs = [RunStamp(f"01a24247-0000-7000-8000-{end}") for end in ("ffffffffffff", "000000000000")]
    for run in runs:
        write_job_outputs(tmp_path, record, [image], run)
    job = next(tmp_path.glob("*/*"))
    folders = sorted(p for p in job.iterdir() if p.is_dir() and not p.is_symlink())
    assert [f.name.split("_")[1] for f in folders] == [r.tag for r in runs]
    assert (job / LATEST).resolve() == folders[-1].resolve()
