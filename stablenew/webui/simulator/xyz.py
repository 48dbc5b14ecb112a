"""The X/Y/Z plot script (``scripts/xyz_grid.py``) in shape: one cell per axis-value
combination, a sub-grid per Z value, the Z grid first, the axis types and values in the grid's
infotext.

Axis types are indexes into A1111 1.10's list of axis options for the tab (or, as a simulator
convenience, the option's label). The axes that change a request field, an option or the
checkpoint are applied to each cell; the others (prompt order, face restore, ...) only label it.
"""

from __future__ import annotations

import re
from typing import Any

from stablenew.webui.simulator import render
from stablenew.webui.simulator.infotext import add_params
from stablenew.webui.simulator.processing import Batch
from stablenew.webui.simulator.script_context import Context, arg, merge

# (label, how it applies, value type, tabs): "field" names a request field, "@option:x" an
# option, "@checkpoint" / "@prompt_sr" / "@size" / "@styles" special cases, None: label only.
_AXES: tuple[tuple[str, str | None, type, str], ...] = (
    ("Nothing", None, str, "both"),
    ("Seed", "seed", int, "both"),
    ("Var. seed", "subseed", int, "both"),
    ("Var. strength", "subseed_strength", float, "both"),
    ("Steps", "steps", int, "both"),
    ("Hires steps", "hr_second_pass_steps", int, "txt2img"),
    ("CFG Scale", "cfg_scale", float, "both"),
    ("Image CFG Scale", "image_cfg_scale", float, "img2img"),
    ("Prompt S/R", "@prompt_sr", str, "both"),
    ("Prompt order", None, str, "both"),
    ("Sampler", "sampler_name", str, "txt2img"),
    ("Hires sampler", "hr_sampler_name", str, "txt2img"),
    ("Sampler", "sampler_name", str, "img2img"),
    ("Checkpoint name", "@checkpoint", str, "both"),
    ("Negative Guidance minimum sigma", "s_min_uncond", float, "both"),
    ("Sigma Churn", "s_churn", float, "both"),
    ("Sigma min", "s_tmin", float, "both"),
    ("Sigma max", "s_tmax", float, "both"),
    ("Sigma noise", "s_noise", float, "both"),
    ("Schedule type", "scheduler", str, "both"),
    ("Schedule min sigma", "@option:sigma_min", float, "both"),
    ("Schedule max sigma", "@option:sigma_max", float, "both"),
    ("Schedule rho", "@option:rho", float, "both"),
    ("Eta", "eta", float, "both"),
    ("Clip skip", "@option:CLIP_stop_at_last_layers", int, "both"),
    ("Denoising", "denoising_strength", float, "both"),
    ("Initial noise multiplier", "initial_noise_multiplier", float, "both"),
    ("Extra noise", "@option:img2img_extra_noise", float, "both"),
    ("Hires upscaler", "hr_upscaler", str, "txt2img"),
    ("Cond. Image Mask Weight", "@option:inpainting_mask_weight", float, "img2img"),
    ("VAE", "@option:sd_vae", str, "both"),
    ("Styles", "@styles", str, "both"),
    ("UniPC Order", "@option:uni_pc_order", int, "both"),
    ("Face restore", None, str, "both"),
    ("Token merging ratio", "@option:token_merging_ratio", float, "both"),
    ("Token merging ratio high-res", "@option:token_merging_ratio_hr", float, "both"),
    ("Always discard next-to-last sigma", None, str, "both"),
    ("SGM noise multiplier", None, str, "both"),
    ("Refiner checkpoint", "refiner_checkpoint", str, "both"),
    ("Refiner switch at", "refiner_switch_at", float, "both"),
    ("RNG source", "@option:randn_source", str, "both"),
    ("FP8 mode", "@option:fp8_storage", str, "both"),
    ("Size", "@size", str, "both"),
)
_NUM = r"([+-]?\s*\d+(?:\.\d*)?)"
_RANGE = re.compile(rf"^\s*{_NUM}\s*-\s*{_NUM}(?:\s*\(([+-]\d+(?:\.\d*)?)\s*\))?\s*$")
_COUNT = re.compile(rf"^\s*{_NUM}\s*-\s*{_NUM}\s*\[(\d+)\]\s*$")


def axes(kind: str) -> list[tuple[str, str | None, type, str]]:
    """The axis options of a tab, in A1111's order (their index is the API's axis type)."""
    return [a for a in _AXES if a[3] in ("both", kind)]


def _axis(kind: str, chosen: Any) -> tuple[str, str | None, type, str]:
    options = axes(kind)
    if isinstance(chosen, str) and not chosen.isdigit():
        found = next((a for a in options if a[0].lower() == chosen.lower()), None)
        if found is None:
            raise ValueError(f"unknown X/Y/Z axis type {chosen!r}")
        return found
    return options[int(chosen)]  # IndexError (a 500) for an index past the list


def _values(kind: type, text: str) -> list[Any]:
    """The axis values: comma-separated, with ``a-b``, ``a-b (+step)``, ``a-b [count]``."""
    items = [x.strip() for x in text.split(",") if x.strip()]
    if kind is str:
        return items
    out: list[Any] = []
    for item in items:
        m, c = _RANGE.match(item), _COUNT.match(item)
        if m and kind is int:
            start, end = int(m.group(1).replace(" ", "")), int(m.group(2).replace(" ", ""))
            step = int(m.group(3) or 1)
            out += list(range(start, end + 1, step))
        elif m:
            start_f, end_f = float(m.group(1)), float(m.group(2))
            step_f = float(m.group(3) or 1)
            count = int((end_f - start_f) / step_f) + 1
            out += [start_f + i * step_f for i in range(count)]
        elif c:
            a, b, n = float(c.group(1)), float(c.group(2)), int(c.group(3))
            out += [kind(a + (b - a) * i / max(1, n - 1)) for i in range(n)]
        else:
            out.append(kind(item))
    return out


def _apply(ctx: Context, how: str | None, value: Any, changes: dict[str, Any]) -> dict[str, Any]:
    """Put one axis value into the cell's request ``changes``; returns option overrides."""
    options: dict[str, Any] = {}
    if how is None:
        return options
    if how == "@prompt_sr":
        search = changes.get("_sr_search")
        if search is not None:
            for key in ("prompt", "negative_prompt"):
                text = str(changes.get(key, ctx.req.value(key)))
                changes[key] = text.replace(search, str(value))
    elif how == "@checkpoint":
        checkpoint = ctx.state.inventory.checkpoint(str(value))
        if checkpoint is None:
            raise RuntimeError(f"Unknown checkpoint: {value}")
        options["sd_model_checkpoint"] = checkpoint.title
    elif how == "@size":
        w, _, h = str(value).partition("x")
        changes.update(width=int(w), height=int(h))
    elif how == "@styles":
        changes["styles"] = [s.strip() for s in str(value).split("&") if s.strip()]
    elif how.startswith("@option:"):
        options[how.removeprefix("@option:")] = value
    else:
        changes[how] = value
    return options


def run_xyz(ctx: Context, args: list[Any]) -> Batch:
    """The script's ``run``: cells in Z, Y, X order; grids first; lone images if asked."""
    specs = []
    for i in range(3):
        axis = _axis(ctx.kind, arg(args, i * 3, 0))
        dropdown = arg(args, i * 3 + 2, [])
        text = ", ".join(str(x) for x in dropdown) if dropdown else str(arg(args, i * 3 + 1, ""))
        values = _values(axis[2], text) if axis[0] != "Nothing" else []
        specs.append((axis, text, values or [None]))
    include_lone, include_sub_grids = bool(arg(args, 14, False)), bool(arg(args, 15, False))
    xs, ys, zs = (values for _, _, values in specs)
    seed = ctx.fixed_seed()
    batches: list[Batch] = []
    cells, cell_texts, sub_grids, grid_texts = [], [], [], []
    for z in zs:
        first_text: str | None = None
        row_cells = []
        for y in ys:
            for x in xs:
                changes: dict[str, Any] = {"seed": seed}
                opts: dict[str, Any] = {}
                for (axis, _, values), value in ((specs[0], x), (specs[1], y), (specs[2], z)):
                    if axis[1] == "@prompt_sr" and values:
                        changes["_sr_search"] = str(values[0])
                    if value is not None:
                        opts.update(_apply(ctx, axis[1], value, changes))
                    changes.pop("_sr_search", None)
                if "sd_model_checkpoint" in opts:
                    checkpoint = ctx.state.inventory.checkpoint(opts["sd_model_checkpoint"])
                    if checkpoint is not None:
                        ctx.state.load_model(checkpoint)
                batch = ctx.run(changes, opts={**ctx.opts, **opts})
                batches.append(batch)
                if batch.images:
                    row_cells.append(batch.images[0])
                    cell_texts.append(batch.infotexts[0])
                    first_text = first_text or batch.infotexts[0]
        cells += row_cells
        sub_grids.append(render.grid(row_cells, rows=len(ys)) if row_cells else None)
        grid_texts.append(_grid_params(first_text or "", specs))
    grids = [g for g in sub_grids if g is not None]
    z_grid = render.grid(grids, rows=1) if grids else None
    images = ([z_grid] if z_grid else []) + (grids if include_sub_grids else [])
    texts = grid_texts[:1] + (grid_texts if include_sub_grids else [])
    if include_lone:
        images += cells
        texts += cell_texts
    return merge(batches, images, texts[: len(images)])


def _grid_params(text: str, specs: list[tuple[Any, str, list[Any]]]) -> str:
    params: dict[str, Any] = {"Script": "X/Y/Z plot"}
    for name, (axis, values_text, values) in zip("XYZ", specs, strict=True):
        if axis[0] == "Nothing":
            continue
        params[f"{name} Type"] = axis[0]
        params[f"{name} Values"] = values_text
        if axis[0] in ("Seed", "Var. seed"):
            params[f"Fixed {name} Values"] = ", ".join(str(v) for v in values)
    return add_params(text, params)
