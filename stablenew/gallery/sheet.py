"""X/Y contact sheets for matrix packs, like A1111's X/Y/Z plot, drawn with Pillow.

The axes are two matrix slots: the pack's ``grid: {x, y}``, else its first two slots. Every
other thing that varies between the pack's jobs (more slots, prompt rows, variants, batches,
images of one job) gives one sheet per combination. Each sheet is a PNG under
``<output_root>/<pack>/_grid/`` with labelled axes and a ``parameters`` text chunk (the
infotext) saying what varied; ``layout.json`` beside them gives every cell's box and job, so
tests and tools can find an image on a sheet. Cells whose job has not finished yet are drawn
as "pending": a sheet rebuilt while the pack runs is a partial sheet.
"""

from __future__ import annotations

import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from PIL import Image, ImageDraw, ImageFont, PngImagePlugin

from stablenew.gallery.catalog import GRID_DIR, JobEntry, pack_dir, scan_pack
from stablenew.gallery.thumbs import thumbnail

LAYOUT = "layout.json"
MAX_CELL = 256  # px; the cached thumbnails' size
MIN_CELL = 64
MAX_SHEET_SIDE = 4096  # cells shrink so a sheet stays under this many px a side
_PAD = 8
_BG = (255, 255, 255)
_INK = (20, 20, 20)
_PENDING = (225, 225, 225)
# Record fields worth naming in a sheet's "varied" line when they differ between its cells.
_COMPARED = ("prompt", "seed", "model", "vae", "sampler", "scheduler", "steps", "cfg_scale")


class GridError(ValueError):
    """The pack's jobs cannot be put on the requested axes (e.g. no matrix slots)."""


@dataclass(frozen=True, slots=True)
class GridAxes:
    """The slot across (x) and down (y, optional), with their values in display order."""

    x: str
    x_values: tuple[str, ...]
    y: str | None = None
    y_values: tuple[str, ...] = ()


def _ordered(values: Sequence[str]) -> tuple[str, ...]:
    return tuple(dict.fromkeys(values))


def resolve_axes(
    jobs: Sequence[JobEntry],
    *,
    x: str | None = None,
    y: str | None = None,
    slots: dict[str, list[str]] | None = None,
) -> GridAxes:
    """Axes from explicit names (a pack's ``grid``), else the first two matrix slots.

    ``slots`` (the pack's ``matrix.slots``) gives the value order and the slot order; without
    it both come from the jobs on disk, in pack order.
    """
    names = list(slots) if slots else list(_ordered([k for j in jobs for k in j.slots]))
    if not names:
        raise GridError("the pack has no matrix slots: there is nothing to put on the axes")
    x = x or names[0]
    if y is None and x == names[0] and len(names) > 1:
        y = names[1]
    elif y is None and len(names) > 1:
        y = next(n for n in names if n != x)
    for axis in (x, y):
        if axis is not None and axis not in names:
            raise GridError(f"{axis!r} is not a matrix slot of the pack (slots: {names})")
    if x == y:
        raise GridError(f"x and y must be different slots, both are {x!r}")

    def values(slot: str) -> tuple[str, ...]:
        if slots and slot in slots:
            return tuple(str(v) for v in slots[slot])
        return _ordered([j.slots[slot] for j in jobs if slot in j.slots])

    return GridAxes(x, values(x), y, values(y) if y else ())


@dataclass(frozen=True, slots=True)
class Cell:
    x: str
    y: str | None
    job: JobEntry
    image: Path


def _pages(jobs: Sequence[JobEntry], axes: GridAxes) -> dict[tuple[Any, ...], list[Cell]]:
    """Cells grouped by everything that varies besides the axes (one sheet per group)."""
    rest = [s for s in _ordered([k for j in jobs for k in j.slots]) if s not in (axes.x, axes.y)]
    pages: dict[tuple[Any, ...], list[Cell]] = {}
    for job in jobs:
        for n, image in enumerate(job.images):
            r = job.record
            key = (
                tuple((s, job.slots.get(s, "")) for s in rest),
                ("row", r.get("row_index", 0)),
                ("variant", r.get("variant_index", 0)),
                ("batch", r.get("batch_index", 0)),
                ("image", n),
            )
            cell = Cell(
                job.slots.get(axes.x, ""),
                job.slots.get(axes.y) if axes.y else None,
                job,
                image.path,
            )
            pages.setdefault(key, []).append(cell)
    # Name only the parts of the key that differ between pages.
    keys = list(pages)
    varying = [i for i in range(5) if len({k[i] for k in keys}) > 1]
    return {tuple(k[i] for i in varying): v for k, v in pages.items()}


def _fixed(key: tuple[Any, ...]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    for part in key:
        if part and isinstance(part[0], tuple):
            out.update(dict(part))
        elif part:
            out[part[0]] = part[1]
    return out


def _font(size: int) -> ImageFont.FreeTypeFont | ImageFont.ImageFont:
    return ImageFont.load_default(size=size)


def _fit(draw: ImageDraw.ImageDraw, text: str, font: Any, width: int) -> str:
    if draw.textlength(text, font=font) <= width:
        return text
    while text and draw.textlength(text + "…", font=font) > width:
        text = text[:-1]
    return text + "…"


@dataclass(frozen=True, slots=True)
class Sheet:
    path: Path
    fixed: dict[str, Any]
    cells: list[dict[str, Any]]
    missing: list[dict[str, Any]]


def _draw_sheet(
    path: Path, pack_id: str, axes: GridAxes, fixed: dict[str, Any], cells: list[Cell], root: Path
) -> Sheet:
    nx, ny = len(axes.x_values), max(len(axes.y_values), 1)
    size = max(MIN_CELL, min(MAX_CELL, (MAX_SHEET_SIDE - 200) // max(nx, ny)))
    label_font, title_font = _font(max(12, min(18, size // 10))), _font(20)
    probe = ImageDraw.Draw(Image.new("RGB", (1, 1)))
    left = _PAD * 2 + int(max([probe.textlength(v, font=label_font) for v in axes.y_values] or [0]))
    left = min(left, 240)
    title_h, header_h = 34 + (22 if fixed else 0), 28
    top = title_h + header_h
    width = left + nx * (size + _PAD) + _PAD
    height = top + ny * (size + _PAD) + _PAD
    sheet = Image.new("RGB", (max(width, 480), height), _BG)
    draw = ImageDraw.Draw(sheet)
    title = f"{pack_id}: x = {axes.x}" + (f", y = {axes.y}" if axes.y else "")
    draw.text(
        (_PAD, 8), _fit(draw, title, title_font, sheet.width - 2 * _PAD), fill=_INK, font=title_font
    )
    if fixed:
        line = ", ".join(f"{k} = {v}" for k, v in fixed.items())
        draw.text(
            (_PAD, 34),
            _fit(draw, line, label_font, sheet.width - 2 * _PAD),
            fill=_INK,
            font=label_font,
        )
    for i, xv in enumerate(axes.x_values):
        x0 = left + _PAD + i * (size + _PAD)
        draw.text(
            (x0 + size // 2, title_h + header_h // 2),
            _fit(draw, xv, label_font, size),
            fill=_INK,
            font=label_font,
            anchor="mm",
        )
    for j, yv in enumerate(axes.y_values):
        y0 = top + j * (size + _PAD)
        draw.text(
            (left - _PAD, y0 + size // 2),
            _fit(draw, yv, label_font, left - 2 * _PAD),
            fill=_INK,
            font=label_font,
            anchor="rm",
        )
    by_pos = {(c.x, c.y): c for c in cells}
    placed: list[dict[str, Any]] = []
    missing: list[dict[str, Any]] = []
    rows: tuple[str | None, ...] = axes.y_values or (None,)
    for j, row in enumerate(rows):
        for i, xv in enumerate(axes.x_values):
            x0, y0 = left + _PAD + i * (size + _PAD), top + j * (size + _PAD)
            cell = by_pos.get((xv, row))
            if cell is None:
                draw.rectangle((x0, y0, x0 + size - 1, y0 + size - 1), fill=_PENDING)
                draw.text(
                    (x0 + size // 2, y0 + size // 2),
                    "pending",
                    fill=(120, 120, 120),
                    font=label_font,
                    anchor="mm",
                )
                missing.append({"x": xv, "y": row})
                continue
            with Image.open(thumbnail(cell.image)) as thumb:
                img = thumb.convert("RGB")
            img.thumbnail((size, size), Image.Resampling.LANCZOS)
            ox, oy = x0 + (size - img.width) // 2, y0 + (size - img.height) // 2
            sheet.paste(img, (ox, oy))
            placed.append(
                {
                    "x": xv,
                    "y": row,
                    "job_id": cell.job.job_id,
                    "image": cell.image.relative_to(root).as_posix(),
                    "box": [ox, oy, ox + img.width, oy + img.height],
                }
            )
    info = PngImagePlugin.PngInfo()
    info.add_text("parameters", _infotext(pack_id, axes, fixed, cells))
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    sheet.save(tmp, "PNG", pnginfo=info)
    os.replace(tmp, path)
    return Sheet(path, fixed, placed, missing)


def _infotext(pack_id: str, axes: GridAxes, fixed: dict[str, Any], cells: list[Cell]) -> str:
    lines = [f"Contact sheet of pack {pack_id}"]
    lines.append(f"X: {axes.x} ({', '.join(axes.x_values)})")
    if axes.y:
        lines.append(f"Y: {axes.y} ({', '.join(axes.y_values)})")
    if fixed:
        lines.append("Fixed: " + ", ".join(f"{k}={v}" for k, v in fixed.items()))
    varied = [axes.x] + ([axes.y] if axes.y else [])
    varied += [f for f in _COMPARED if len({str(c.job.record.get(f)) for c in cells}) > 1]
    lines.append("Varied: " + ", ".join(varied))
    same = [
        f"{f}: {cells[0].job.record.get(f)}" for f in _COMPARED[2:] if f not in varied and cells
    ]
    if same:
        lines.append(", ".join(same))
    return "\n".join(lines)


@dataclass(frozen=True, slots=True)
class SheetSet:
    """What :func:`build_sheets` wrote: the sheets and the ``layout.json`` describing them."""

    layout_path: Path
    sheets: list[Sheet]
    complete: bool


def build_sheets(
    output_root: Path,
    pack_id: str,
    *,
    x: str | None = None,
    y: str | None = None,
    slots: dict[str, list[str]] | None = None,
    expected_jobs: int | None = None,
) -> SheetSet:
    """(Re)build the pack's contact sheets from what is on disk; partial while jobs run.

    ``x``/``y`` name the axes (the pack's ``grid``), ``slots`` the pack's matrix (value
    order); ``expected_jobs`` (the pack's job count) lets ``complete`` say all are in.
    """
    root = output_root.resolve()
    jobs = scan_pack(root, pack_id)
    axes = resolve_axes(jobs, x=x, y=y, slots=slots)
    out = pack_dir(root, pack_id) / GRID_DIR
    out.mkdir(parents=True, exist_ok=True)
    pages = _pages(jobs, axes) or {(): []}
    names = (
        ["sheet.png"]
        if len(pages) == 1
        else [f"sheet-{n:03d}.png" for n in range(1, len(pages) + 1)]
    )
    sheets = [
        _draw_sheet(out / name, pack_id, axes, _fixed(key), cells, root)
        for name, (key, cells) in zip(names, pages.items(), strict=True)
    ]
    for stale in out.glob("sheet*.png"):
        if stale.name not in names:
            stale.unlink(missing_ok=True)
    complete = all(not s.missing for s in sheets) and (
        expected_jobs is None or len(jobs) >= expected_jobs
    )
    layout = {
        "pack_id": pack_id,
        "x": {"slot": axes.x, "values": list(axes.x_values)},
        "y": {"slot": axes.y, "values": list(axes.y_values)},
        "jobs_on_disk": len(jobs),
        "expected_jobs": expected_jobs,
        "complete": complete,
        "sheets": [
            {"file": s.path.name, "fixed": s.fixed, "cells": s.cells, "missing": s.missing}
            for s in sheets
        ],
    }
    layout_path = out / LAYOUT
    tmp = layout_path.with_name(f".{LAYOUT}.{os.getpid()}.tmp")
    tmp.write_text(json.dumps(layout, indent=2, ensure_ascii=False), encoding="utf-8")
    os.replace(tmp, layout_path)
    return SheetSet(layout_path, sheets, complete)


def stored_axes(output_root: Path, pack_id: str) -> dict[str, Any]:
    """The axes the pack's last sheets used (``layout.json``), as :func:`build_sheets` kwargs.

    A rebuild without the pack file (the file server, ``stablenew grid PACK_ID``) keeps the
    axes the pack chose; an empty dict when there is no earlier layout.
    """
    try:
        layout = json.loads(
            (pack_dir(output_root, pack_id) / GRID_DIR / LAYOUT).read_text(encoding="utf-8")
        )
        x, y = layout["x"], layout["y"]
        slots = {x["slot"]: list(x["values"])}
        if y.get("slot"):
            slots[y["slot"]] = list(y["values"])
        return {"x": x["slot"], "y": y.get("slot"), "slots": slots}
    except (OSError, ValueError, KeyError, TypeError):
        return {}
