"""`stablenew run` on the embedded default, as the README's quick start runs it: a fresh data
dir, nothing configured; it starts a server, simulator and worker on loopback, renders the
demo pack, exports history, and stops everything it started. A bad pack starts nothing."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]


def _env(home: Path) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("STABLENEW_", "PREFECT_"))}
    env["STABLENEW_HOME"] = str(home)
    return env


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_run_demo_pack_end_to_end(tmp_path: Path) -> None:
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-m", "stablenew", "run", "configs/packs/demo.yaml", "--json"],
        cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=220,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr[-2000:]
    summary = json.loads(done.stdout.strip().splitlines()[-1])
    assert summary["counts"] == {"completed": 4}
    assert summary["stack_left_running"] is False
    pngs = sorted(Path(summary["output_dir"]).glob("*/latest/*.png"))
    assert len(pngs) == 4
    with Image.open(pngs[0]) as img:
        assert "Steps: 8" in img.info["parameters"]
    assert summary["history"].endswith("history.db")
    assert not (home / "stack.json").exists()  # everything it started was stopped


def test_bad_pack_starts_and_queues_nothing(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("pack: broken\nprompts: []\nstepz: 3\n")
    home = tmp_path / "home"
    done = subprocess.run(
        [sys.executable, "-m", "stablenew", "run", str(bad)],
        cwd=ROOT, env=_env(home), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert f"{bad}:" in done.stderr
    assert "nothing was queued" in done.stderr
    assert not (home / "prefect").exists()


def test_unknown_priority_names_the_valid_ones(tmp_path: Path) -> None:
    done = subprocess.run(
        [sys.executable, "-m", "stablenew", "run", "configs/packs/demo.yaml", "-p", "asap"],
        cwd=ROOT, env=_env(tmp_path / "home"), capture_output=True, text=True, timeout=60,
    )  # fmt: skip
    assert done.returncode == 2
    assert "urgent, high, normal, low" in done.stderr
    assert not (tmp_path / "home" / "prefect").exists()
