"""Contact sheets: the cells are the right images (checked through layout.json), the axes are
the pack's grid or its first two slots, partial sheets show pending cells, extra slots give
one sheet each, and the sheet's infotext says what varied."""

from __future__ import annotations

import io
import json
from pathlib import Path

import pytest
from PIL import Image, ImageChops, ImageStat

from stablenew.builder import build_jobs
from stablenew.gallery import GridError, build_sheets, pack_axes, refresh_pack
from stablenew.packs import load_pack
from tests.gallery.conftest import pack_file, write_outputs


def _diff(a: Image.Image, b: Image.Image) -> float:
    return sum(ImageStat.Stat(ImageChops.difference(a, b)).mean) / 3


def _check_cells(root: Path, layout: dict, pngs: dict[str, bytes]) -> None:
    """Every cell's crop matches its own job's PNG better than any other job's, and closely."""
    for sheet in layout["sheets"]:
        with Image.open(root / layout["pack_id"] / "_grid" / sheet["file"]) as img:
            img = img.convert("RGB")
        for cell in sheet["cells"]:
            crop = img.crop(tuple(cell["box"]))
            diffs = {
                job_id: _diff(crop, Image.open(io.BytesIO(png)).convert("RGB").resize(crop.size))
                for job_id, png in pngs.items()
            }
            own = diffs.pop(cell["job_id"])
            # Resampling blurs the stripes' edges a little; any other job is far off.
            assert own < 20, (cell, own)
            assert own < 0.5 * min(diffs.values(), default=255), (cell, own, diffs)
            assert (root / cell["image"]).is_file()


def test_fox_matrix_sheet_cells_are_the_job_images(tmp_path: Path, fox) -> None:
    pack, records = fox
    root = tmp_path / "out"
    pngs = write_outputs(root, records)
    result = build_sheets(root, "fox-matrix", expected_jobs=len(records), **pack_axes(pack))
    layout = json.loads(result.layout_path.read_text())
    # fox-matrix has no grid: key, so its first two slots are the axes, in the pack's order.
    assert layout["x"] == {"slot": "season", "values": ["winter", "autumn"]}
    assert layout["y"] == {
        "slot": "style",
        "values": ["oil painting", "watercolor", "studio photograph"],
    }
    assert result.complete
    assert layout["complete"]
    [sheet] = layout["sheets"]
    assert sheet["file"] == "sheet.png"
    assert not sheet["missing"]
    by_job = {r.job_id: r for r in records}
    assert {c["job_id"] for c in sheet["cells"]} == set(by_job)
    for cell in sheet["cells"]:
        slots = by_job[cell["job_id"]].matrix_slot_values
        assert (cell["x"], cell["y"]) == (slots["season"], slots["style"])
    _check_cells(root, layout, pngs)
    with Image.open(result.sheets[0].path) as img:
        info = img.text["parameters"]  # type: ignore[attr-defined]
    assert "X: season (winter, autumn)" in info
    assert "Y: style (oil painting, watercolor, studio photograph)" in info
    assert info.splitlines()[-2].startswith("Varied: season, style")


def test_grid_key_chooses_the_axes_and_the_label_order(tmp_path: Path) -> None:
    pack = load_pack(pack_file(tmp_path, grid={"x": "style", "y": "season"}))
    records = list(build_jobs(pack))
    root = tmp_path / "out"
    pngs = write_outputs(root, records)
    layout = json.loads(build_sheets(root, "fox-matrix", **pack_axes(pack)).layout_path.read_text())
    assert layout["x"]["slot"] == "style"
    assert layout["y"]["slot"] == "season"
    boxes = {(c["x"], c["y"]): c["box"] for c in layout["sheets"][0]["cells"]}
    # Columns left to right in the pack's value order, rows top to bottom.
    assert boxes[("oil painting", "winter")][0] < boxes[("watercolor", "winter")][0]
    assert boxes[("oil painting", "winter")][1] < boxes[("oil painting", "autumn")][1]
    _check_cells(root, layout, pngs)


def test_partial_sheet_while_running_then_complete(tmp_path: Path, fox) -> None:
    pack, records = fox
    root = tmp_path / "out"
    write_outputs(root, records[:4])
    partial = build_sheets(root, "fox-matrix", expected_jobs=len(records), **pack_axes(pack))
    assert not partial.complete
    assert len(partial.sheets[0].missing) == 2
    assert len(partial.sheets[0].cells) == 4
    pngs = write_outputs(root, records)  # the rest finish (re-runs of the first four too)
    final = build_sheets(root, "fox-matrix", expected_jobs=len(records), **pack_axes(pack))
    assert final.complete
    _check_cells(root, json.loads(final.layout_path.read_text()), pngs)


def test_more_slots_give_one_sheet_per_remaining_combination(tmp_path: Path) -> None:
    path = pack_file(
        tmp_path,
        matrix={
            "mode": "cartesian",
            "slots": {
                "season": ["winter", "autumn"],
                "style": ["oil", "ink"],
                "time": ["dawn", "dusk", "night"],
            },
        },
        prompts=[{"text": "a __foxes__ in a ${season} forest, ${style}, at ${time}"}],
        stages=[{"type": "txt2img"}],
        grid={"x": "style", "y": "time"},
    )
    pack = load_pack(path)
    records = list(build_jobs(pack))
    root = tmp_path / "out"
    pngs = write_outputs(root, records, size=128)
    result = build_sheets(root, "fox-matrix", **pack_axes(pack))
    layout = json.loads(result.layout_path.read_text())
    assert [s["file"] for s in layout["sheets"]] == ["sheet-001.png", "sheet-002.png"]
    assert sorted(s["fixed"]["season"] for s in layout["sheets"]) == ["autumn", "winter"]
    assert all(len(s["cells"]) == 6 for s in layout["sheets"])
    _check_cells(root, layout, pngs)
    with Image.open(result.sheets[0].path) as img:
        assert "Fixed: season=" in img.text["parameters"]  # type: ignore[attr-defined]


def test_a_pack_without_matrix_has_no_sheet_but_a_gallery(tmp_path: Path) -> None:
    pack = load_pack(pack_file(tmp_path, matrix=None, prompts=[{"text": "a fox"}], variants=2))
    records = list(build_jobs(pack))
    root = tmp_path / "out"
    write_outputs(root, records, size=64)
    with pytest.raises(GridError, match="no matrix slots"):
        build_sheets(root, "fox-matrix")
    done = refresh_pack(root, "fox-matrix", pack=pack)
    assert done.sheets is None
    assert done.gallery.is_file()


def test_rebuild_without_the_pack_keeps_its_axes(tmp_path: Path) -> None:
    pack = load_pack(pack_file(tmp_path, grid={"x": "style", "y": "season"}))
    root = tmp_path / "out"
    write_outputs(root, list(build_jobs(pack)))
    refresh_pack(root, "fox-matrix", pack=pack)
    again = refresh_pack(root, "fox-matrix")  # e.g. the file server, or `grid fox-matrix`
    assert again.sheets is not None
    layout = json.loads(again.sheets.layout_path.read_text())
    assert (layout["x"]["slot"], layout["y"]["slot"]) == ("style", "season")
