"""What A1111's shipped selectable scripts do to a job, in shape: how many images come back, of
what size, with which infotext (reference: ``scripts/*.py`` of A1111 1.10).

Each runner calls :func:`~stablenew.webui.simulator.processing.process` as often as the real
script calls ``process_images`` and assembles the answer the way the script does (grids first,
``index_of_first_image``, the infotext every image carries). Grids have no legend text.
"""

from __future__ import annotations

import math
import re
import shlex
from collections.abc import Callable
from typing import Any

from PIL import Image

from stablenew.webui.simulator import render
from stablenew.webui.simulator.processing import Batch
from stablenew.webui.simulator.script_context import Context, Runner, arg, merge
from stablenew.webui.simulator.scripts import Script
from stablenew.webui.simulator.xyz import run_xyz


def run_script(ctx: Context, script: Script | None, args: list[Any]) -> Batch:
    """The request's selectable script (or none) over its job."""
    if script is None or script.runs_as_plain_job:
        return ctx.run()
    return _RUNNERS[script.title.lower()](ctx, args)


# -- SD upscale ----------------------------------------------------------------------------


def _sd_upscale(ctx: Context, args: list[Any]) -> Batch:
    if not ctx.inits:
        raise IndexError("list index out of range")
    overlap = int(arg(args, 1, 64))
    chosen = arg(args, 2, 0)
    ups = ctx.state.inventory.upscalers
    if isinstance(chosen, str):
        names = [u.name.lower() for u in ups]
        chosen = names.index(chosen.lower())  # ValueError (500) for an unknown name
    upscaler = ups[int(chosen)]
    scale = float(arg(args, 3, 2.0))
    init = ctx.inits[0].convert("RGB")
    size = (int(init.width * scale), int(init.height * scale))
    big = render.upscale(init, upscaler.name, *size) if upscaler.name != "None" else init
    tile_w, tile_h = int(ctx.req.value("width")), int(ctx.req.value("height"))
    boxes = _tiles(big.size, tile_w, tile_h, overlap)
    batch_size = int(ctx.req.value("batch_size"))
    seed = ctx.fixed_seed()
    extra = {"SD upscale overlap": overlap, "SD upscale upscaler": upscaler.name}
    batches: list[Batch] = []
    results: list[Image.Image] = []
    for n in range(int(ctx.req.value("n_iter"))):
        current = seed + n
        done: list[Image.Image] = []
        for i in range(0, len(boxes), batch_size):
            crops = [big.crop(box) for box in boxes[i : i + batch_size]]
            changes = {"seed": current, "n_iter": 1, "batch_size": batch_size}
            batch = ctx.run(changes, inits=crops, extra=extra)
            batches.append(batch)
            done += batch.images
            current = int(batch.info["seed"]) + 1
        out = big.copy()
        for box, tile in zip(boxes, done, strict=False):
            out.paste(tile.resize((box[2] - box[0], box[3] - box[1])), (box[0], box[1]))
        results.append(out)
    first = batches[0].infotexts[0] if batches and batches[0].infotexts else ""
    merged = merge(batches, results, [first] * len(results))
    merged.info["seed"] = seed
    return merged


def _tiles(
    size: tuple[int, int], tile_w: int, tile_h: int, overlap: int
) -> list[tuple[int, int, int, int]]:
    """Tile boxes as ``images.split_grid`` lays them out (overlapping, last one flush)."""
    w, h = size

    def starts(total: int, tile: int) -> list[int]:
        step = max(1, tile - overlap)
        count = max(1, math.ceil((total - overlap) / step))
        if count == 1:
            return [0]
        dx = (total - tile) / (count - 1)
        return [int(i * dx) for i in range(count)]

    return [(x, y, x + tile_w, y + tile_h) for y in starts(h, tile_h) for x in starts(w, tile_w)]


# -- Loopback ------------------------------------------------------------------------------


def _loopback(ctx: Context, args: list[Any]) -> Batch:
    loops = int(arg(args, 0, 4))
    final = float(arg(args, 1, 0.5))
    curve = str(arg(args, 2, "Linear"))
    initial = float(ctx.req.value("denoising_strength"))
    extra = {"Final denoising strength": final, "Denoising curve": curve}

    def strength(loop: int) -> float:
        if loops == 1:
            return initial
        progress = loop / (loops - 1)
        if curve == "Aggressive":
            progress = math.sin(progress * math.pi * 0.5)
        elif curve == "Lazy":
            progress = 1 - math.cos(progress * math.pi * 0.5)
        return initial + (final - initial) * progress

    batch_count = int(ctx.req.value("n_iter"))
    seed = ctx.fixed_seed()
    batches: list[Batch] = []
    history: list[Image.Image] = []
    for _ in range(batch_count):
        inits, denoise = ctx.inits, initial
        last: Image.Image | None = None
        for i in range(loops):
            changes = {"seed": seed, "n_iter": 1, "batch_size": 1, "denoising_strength": denoise}
            batch = ctx.run(changes, inits=inits, extra=extra)
            batches.append(batch)
            if batch.interrupted or not batch.images:
                break
            seed, denoise = int(batch.info["seed"]) + 1, strength(i + 1)
            last = batch.images[0]
            inits = [last]
            if batch_count == 1:
                history.append(last)
        if batch_count > 1 and last is not None:
            history.append(last)
        if batches[-1].interrupted:
            break
    grids = [render.grid(history, rows=1)] if len(history) > 1 and ctx.opts["return_grid"] else []
    images = grids + history
    first = batches[0].infotexts[0] if batches[0].infotexts else ""
    return merge(batches, images, [first] * len(images))


# -- Prompt matrix -------------------------------------------------------------------------


def _prompt_matrix(ctx: Context, args: list[Any]) -> Batch:
    put_at_start = bool(arg(args, 0, False))
    different_seeds = bool(arg(args, 1, False))
    prompt_type = arg(args, 2, "positive")
    delimiter_name = arg(args, 3, "comma")
    if prompt_type not in ("positive", "negative"):
        raise ValueError(f"Unknown prompt type {prompt_type}")
    if delimiter_name not in ("comma", "space"):
        raise ValueError(f"Unknown variations delimiter {delimiter_name}")
    field = "prompt" if prompt_type == "positive" else "negative_prompt"
    parts = str(ctx.req.value(field)).split("|")
    delimiter = ", " if delimiter_name == "comma" else " "
    prompts: list[str] = []
    for combo in range(2 ** (len(parts) - 1)):
        chosen = [t.strip().strip(",") for n, t in enumerate(parts[1:]) if combo & (1 << n)]
        chosen = [*chosen, parts[0]] if put_at_start else [parts[0], *chosen]
        prompts.append(delimiter.join(chosen))
    seed = ctx.fixed_seed()
    batches = [
        ctx.run(
            {
                field: text,
                "seed": seed + (i if different_seeds else 0),
                "n_iter": 1,
                "batch_size": 1,
            }
        )
        for i, text in enumerate(prompts)
    ]
    images = [img for b in batches for img in b.images]
    infotexts = [t for b in batches for t in b.infotexts]
    rows = 1 << ((len(parts) - 1) // 2)
    merged = merge(batches, [render.grid(images, rows=rows), *images], infotexts[:1] + infotexts)
    merged.info["index_of_first_image"] = 1
    return merged


# -- Prompts from file or textbox ----------------------------------------------------------

_OPTION_RE = re.compile(r"^--")


def _prompts_from_file(ctx: Context, args: list[Any]) -> Batch:
    iterate = bool(arg(args, 0, False))
    if len(args) >= 4:  # 1.9+: [iterate, iterate_batch, prompt_position, text]
        position, text = str(arg(args, 2, "start")), str(arg(args, 3, ""))
    else:  # before 1.9: [iterate, iterate_batch, text]
        position, text = "start", str(arg(args, 2, ""))
    base_prompt = str(ctx.req.value("prompt"))
    seed = ctx.fixed_seed()
    per_job = int(ctx.req.value("batch_size")) * int(ctx.req.value("n_iter"))
    batches: list[Batch] = []
    for line in (x.strip() for x in text.splitlines()):
        if not line:
            continue
        changes: dict[str, Any] = (
            _line_options(line) if _OPTION_RE.match(line) else {"prompt": line}
        )
        if changes.get("prompt") and base_prompt:
            joined = (changes["prompt"], base_prompt)
            changes["prompt"] = " ".join(joined if position == "start" else joined[::-1])
        changes.setdefault("seed", seed)
        batches.append(ctx.run(changes))
        if iterate:
            seed += per_job
        if batches[-1].interrupted:
            break
    if not batches:
        return ctx.run({"n_iter": 0})
    images = [img for b in batches for img in b.images]
    merged = merge(batches, images, [t for b in batches for t in b.infotexts])
    merged.info["seed"] = seed
    return merged


_LINE_OPTIONS: dict[str, Callable[[str], Any]] = {
    "sd_model": str,
    "outpath_samples": str,
    "outpath_grids": str,
    "prompt_for_display": str,
    "prompt": str,
    "negative_prompt": str,
    "styles": str,
    "seed": int,
    "subseed_strength": float,
    "subseed": int,
    "seed_resize_from_h": int,
    "seed_resize_from_w": int,
    "sampler_index": int,
    "sampler_name": str,
    "batch_size": int,
    "n_iter": int,
    "steps": int,
    "cfg_scale": float,
    "width": int,
    "height": int,
    "restore_faces": lambda v: v.lower() == "true",
    "tiling": lambda v: v.lower() == "true",
    "do_not_save_samples": lambda v: v.lower() == "true",
    "do_not_save_grid": lambda v: v.lower() == "true",
    "denoising_strength": float,
}


def _line_options(line: str) -> dict[str, Any]:
    """``--prompt "a b" --steps 10 ...`` as the script's ``cmdargs`` parses it."""
    words = shlex.split(line)
    out: dict[str, Any] = {}
    pos = 0
    while pos < len(words):
        arg = words[pos]
        if not arg.startswith("--"):
            raise RuntimeError(f"invalid argument: {arg}")
        name = arg[2:]
        if name not in _LINE_OPTIONS:
            raise RuntimeError(f"Unknown commandline option: {name}")
        values: list[str] = []
        pos += 1
        while pos < len(words) and not words[pos].startswith("--"):
            values.append(words[pos])
            pos += 1
        value: Any = _LINE_OPTIONS[name](" ".join(values))
        if name == "styles":
            value = [s for s in " ".join(values).split(",") if s]
        if name not in ("sd_model", "outpath_samples", "outpath_grids", "prompt_for_display"):
            out[name] = value
    return out


_RUNNERS: dict[str, Runner] = {
    "sd upscale": _sd_upscale,
    "loopback": _loopback,
    "prompt matrix": _prompt_matrix,
    "prompts from file or textbox": _prompts_from_file,
    "x/y/z plot": run_xyz,
}
