"""Simulated processing: txt2img/img2img jobs and extras, run under the FIFO generation lock.

Mirrors the parts of A1111's ``process_images`` a client can observe: seeds, per-job
``override_settings`` (with model switches and restoring), ``shared.state`` progress, interrupt
and skip, partial results, the info JSON (keys in §4 order) and infotexts (§7).
"""

from __future__ import annotations

import json
import time
from typing import Any

from fastapi import HTTPException
from PIL import Image

from stablenew.webui._images import encode_b64
from stablenew.webui.simulator import render, scripts
from stablenew.webui.simulator.processing import hold
from stablenew.webui.simulator.schemas import ExtrasRequest, Img2ImgRequest, Txt2ImgRequest
from stablenew.webui.simulator.script_context import Context
from stablenew.webui.simulator.script_runs import run_script
from stablenew.webui.simulator.state import Event, Faults, OutOfMemoryError, SimState

_OOM_TEXT = (
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.99 GiB total capacity; "
    "21.20 GiB already allocated; 0 bytes free; 22.10 GiB reserved in total by PyTorch)"
)


def decode_inputs(values: list[str]) -> list[Image.Image]:
    try:
        return [render.decode_image(v) for v in values]
    except ValueError as e:
        raise HTTPException(status_code=500, detail="Invalid encoded image") from e


def check_scripts(state: SimState, kind: str, req: Txt2ImgRequest | Img2ImgRequest) -> None:
    """Refuse unknown scripts (422) before the job queues, as A1111 does."""
    scripts.selectable(state.inventory, kind, req.value("script_name"))
    scripts.alwayson(state.inventory, kind, dict(req.value("alwayson_scripts") or {}))


def begin_job(state: SimState, faults: Faults) -> None:
    """Injected hang and failures that happen once the job holds the lock."""
    hold(state, faults.hang)
    if faults.fail:
        raise RuntimeError(f"simulated failure of processing request {faults.number}")
    if faults.oom:
        raise OutOfMemoryError(_OOM_TEXT)


def generate(
    state: SimState,
    kind: str,
    req: Txt2ImgRequest | Img2ImgRequest,
    inits: list[Image.Image],
    faults: Faults,
    *,
    mask: Image.Image | None = None,
) -> dict[str, Any]:
    """Run one job; the caller holds ``state.lock``. Returns the A1111 response body.

    Scripts are looked up (and refused, 422) before the job begins, as A1111 does while
    building the processing object."""
    v = req.value
    script = scripts.selectable(state.inventory, kind, v("script_name"))
    always = scripts.alwayson(state.inventory, kind, dict(v("alwayson_scripts") or {}))
    overrides = dict(v("override_settings") or {})
    saved = dict(state.options)
    saved_model = state.loaded
    state.begin(f"scripts_{kind}")
    started = time.time()
    images: list[str] = []
    interrupted = False
    try:
        begin_job(state, faults)
        opts = {**state.options, **overrides}
        state.load_model(state.inventory.checkpoint(opts["sd_model_checkpoint"]) or saved_model)
        opts["sd_model_checkpoint"] = state.loaded.title
        ctx = Context(state, kind, req, inits, opts, mask, scripts.alwayson_params(always))
        batch = run_script(ctx, script, list(v("script_args") or []))
        interrupted = batch.interrupted
        images = [
            encode_b64(render.encode_png(img, {"parameters": text} if text else {}))
            for img, text in zip(
                batch.images, _pad(batch.infotexts, len(batch.images)), strict=True
            )
        ]
        with state.mutex:
            state.options.update(overrides)
            state.options["sd_model_checkpoint"] = state.loaded.title
        parameters = req.model_dump()
        if isinstance(req, Img2ImgRequest) and not v("include_init_images"):
            parameters["init_images"] = None
            parameters["mask"] = None
        return {
            "images": images if v("send_images") else [],
            "parameters": parameters,
            "info": json.dumps(batch.info),
        }
    finally:
        if v("override_settings_restore_afterwards") and overrides:
            with state.mutex:
                state.options = saved
            state.load_model(saved_model)
        state.end()
        state.record(
            Event(
                kind=kind,
                start=started,
                end=time.time(),
                model=state.loaded.title,
                steps=int(v("steps")),
                interrupted=interrupted,
                prompt=str(v("prompt")),
                images=len(images),
            )
        )


def _pad(texts: list[str], n: int) -> list[str]:
    return (texts + [texts[-1] if texts else ""] * n)[:n]


def upscale_one(state: SimState, req: ExtrasRequest, img: Image.Image) -> tuple[Image.Image, str]:
    """One image through the extras upscaler: ``(image, postprocessing infotext)``."""
    v = req.value
    name = str(v("upscaler_1"))
    if state.inventory.upscaler(name) is None:
        raise AssertionError(f"could not find upscaler named {name}")
    if name == "None":
        return img, ""
    if v("resize_mode") == 1:
        w, h = int(v("upscaling_resize_w")), int(v("upscaling_resize_h"))
        text = f"Postprocess upscale to: {w}x{h}, Postprocess upscaler: {name}"
    else:
        scale = float(v("upscaling_resize"))
        w, h = int(img.width * scale), int(img.height * scale)
        text = f"Postprocess upscale by: {scale}, Postprocess upscaler: {name}"
    hold(state, w * h / 1_000_000 * state.timing.seconds_per_megapixel)
    out = render.upscale(img, name, w, h)
    return out, text


def run_extras(
    state: SimState, req: ExtrasRequest, images: list[Image.Image], faults: Faults
) -> tuple[list[str], str]:
    """Extras on each image (caller holds the lock): base64 PNGs and the ``html_info``."""
    state.begin("extras")
    started = time.time()
    out: list[str] = []
    text = ""
    try:
        begin_job(state, faults)
        for img in images:
            result, text = upscale_one(state, req, img)
            chunks = render.text_chunks(img)
            if text:
                chunks["postprocessing"] = text
            out.append(encode_b64(render.encode_png(result, chunks)))
        return out, f"<p>{text}</p>"
    finally:
        state.end()
        state.record(
            Event("extras", started, time.time(), state.loaded.title, 0, False, "", len(out))
        )
