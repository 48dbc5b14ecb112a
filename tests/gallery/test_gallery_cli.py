"""``stablenew grid`` and ``stablenew gallery``, driven in-process."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stablenew.cli.app import app
from tests.gallery.conftest import FOX, pack_file, write_outputs


@pytest.fixture
def env(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    root = tmp_path / "out"
    monkeypatch.setenv("STABLENEW_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("STABLENEW_OUTPUT_ROOT", str(root))
    return root


def test_grid_from_the_pack_file_then_by_id(env: Path, tmp_path: Path, fox) -> None:
    _, records = fox
    write_outputs(env, records[:4])
    path = pack_file(tmp_path, grid={"x": "style", "y": "season"})
    result = CliRunner().invoke(app, ["grid", str(path), "--json"])
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["complete"] is False
    assert out["missing_cells"] == 2
    assert Path(out["sheets"][0]).is_file()
    again = CliRunner().invoke(app, ["grid", "fox-matrix", "--json"])
    layout = json.loads(Path(json.loads(again.stdout)["layout"]).read_text())
    assert layout["x"]["slot"] == "style"  # kept from the pack's grid
    swapped = CliRunner().invoke(app, ["grid", str(FOX), "--x", "style", "--y", "season"])
    assert swapped.exit_code == 0, swapped.output


def test_grid_errors_are_one_line_and_exit_2(env: Path, fox) -> None:
    _, records = fox
    write_outputs(env, records[:1])
    missing = CliRunner().invoke(app, ["grid", "no-such-pack"])
    assert missing.exit_code == 2
    assert "no images of pack" in missing.output
    bad = CliRunner().invoke(app, ["grid", "fox-matrix", "--x", "colour"])
    assert bad.exit_code == 2
    assert "not a matrix slot" in bad.output


def test_gallery_writes_pages(env: Path, fox) -> None:
    _, records = fox
    write_outputs(env, records)
    result = CliRunner().invoke(app, ["gallery", "--json", "--no-open"])
    assert result.exit_code == 0, result.output
    assert Path(json.loads(result.stdout)["index"]) == env.resolve() / "index.html"
    one = CliRunner().invoke(app, ["gallery", "fox-matrix", "--json", "--no-open"])
    assert Path(json.loads(one.stdout)["index"]).parent.name == "fox-matrix"
    assert (env / "fox-matrix" / "_grid" / "sheet.png").is_file()
