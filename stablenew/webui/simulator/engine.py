"""Simulated processing: txt2img/img2img jobs and extras, run under the FIFO generation lock.

Mirrors the parts of A1111's ``process_images`` a client can observe: seeds, per-job
``override_settings`` (with model switches and restoring), ``shared.state`` progress, interrupt
and skip, partial results, the info JSON (keys in §4 order) and infotexts (§7).
"""

from __future__ import annotations

import hashlib
import json
import re
import time
from typing import Any

from fastapi import HTTPException
from PIL import Image

from stablenew.webui._images import encode_b64
from stablenew.webui.simulator import render
from stablenew.webui.simulator.infotext import VERSION, create_infotext
from stablenew.webui.simulator.schemas import ExtrasRequest, Img2ImgRequest, Txt2ImgRequest
from stablenew.webui.simulator.state import Event, Faults, OutOfMemoryError, SimState

_LORA_RE = re.compile(r"<lora:([^:>]+)(?::[^>]*)?>")
_OOM_TEXT = (
    "CUDA out of memory. Tried to allocate 2.00 GiB (GPU 0; 23.99 GiB total capacity; "
    "21.20 GiB already allocated; 0 bytes free; 22.10 GiB reserved in total by PyTorch)"
)


def check_scripts(req: Txt2ImgRequest | Img2ImgRequest) -> None:
    """The simulator has no scripts: any named one is A1111's 422 "Script 'x' not found"."""
    names = [req.script_name] if req.script_name else []
    names += list((req.alwayson_scripts or {}).keys())
    if names:
        raise HTTPException(status_code=422, detail=f"Script '{names[0]}' not found")


def decode_inputs(values: list[str]) -> list[Image.Image]:
    try:
        return [render.decode_image(v) for v in values]
    except ValueError as e:
        raise HTTPException(status_code=500, detail="Invalid encoded image") from e


def hold(state: SimState, seconds: float) -> None:
    """Sleep, cut short by interrupt/skip/reset (``state.abort``)."""
    if seconds > 0:
        state.abort.wait(seconds)


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
) -> dict[str, Any]:
    """Run one job; the caller holds ``state.lock``. Returns the A1111 response body."""
    v = req.value
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
        body, interrupted = _process(state, kind, req, inits, opts)
        images = body["images"]
        with state.mutex:
            state.options.update(overrides)
            state.options["sd_model_checkpoint"] = state.loaded.title
        return body
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


def _process(
    state: SimState,
    kind: str,
    req: Txt2ImgRequest | Img2ImgRequest,
    inits: list[Image.Image],
    opts: dict[str, Any],
) -> tuple[dict[str, Any], bool]:
    v = req.value
    inv = state.inventory
    batch_size, n_iter, steps = int(v("batch_size")), int(v("n_iter")), int(v("steps"))
    if len(inits) > 1:
        if len(inits) > batch_size:
            raise RuntimeError(
                f"bad number of images passed: {len(inits)}; expecting {batch_size} or less"
            )
        batch_size = len(inits)
    width, height = int(v("width")), int(v("height"))
    sampler, schedule = inv.resolve_sampler(req.sampler_name or v("sampler_index"), req.scheduler)
    prompt, negative = inv.apply_styles(v("prompt"), v("negative_prompt"), v("styles") or [])
    n = batch_size * n_iter
    seed = int(v("seed")) if v("seed") != -1 else state.random_seed()
    subseed = int(v("subseed")) if v("subseed") != -1 else state.random_seed()
    strength = float(v("subseed_strength"))
    seeds = [seed + (i if strength == 0 else 0) for i in range(n)]
    subseeds = [subseed + i for i in range(n)]
    hires = kind == "txt2img" and isinstance(req, Txt2ImgRequest) and bool(v("enable_hr"))
    out_w, out_h = width, height
    passes = [steps]
    if isinstance(req, Txt2ImgRequest) and hires:
        hr_scale = float(req.value("hr_scale"))
        out_w = int(req.value("hr_resize_x")) or int(width * hr_scale)
        out_h = int(req.value("hr_resize_y")) or int(height * hr_scale)
        passes.append(int(req.value("hr_second_pass_steps")) or steps)
    vae = inv.vae(opts.get("sd_vae"))
    clip_skip = int(opts.get("CLIP_stop_at_last_layers") or 1)
    denoise = v("denoising_strength") if (kind == "img2img" or hires) else None
    extra: dict[str, Any] = {"Schedule type": schedule}
    if isinstance(req, Txt2ImgRequest) and hires:
        extra["Hires upscale"] = float(req.value("hr_scale"))
        extra["Hires steps"] = req.value("hr_second_pass_steps") or None
        extra["Hires upscaler"] = req.value("hr_upscaler") or "Latent"
    loras = [m.group(1) for m in _LORA_RE.finditer(prompt)]
    known = [lo for lo in inv.loras if lo.name in loras]
    if known:
        extra["Lora hashes"] = ", ".join(
            f"{lo.name}: {hashlib.sha256((lo.sha256 or lo.name).encode()).hexdigest()[:12]}"
            for lo in known
        )
    tm = state.timing
    megapixels = out_w * out_h / 1_000_000
    total_steps = sum(passes)
    batch_seconds = batch_size * (
        tm.seconds_per_image
        + total_steps * tm.seconds_per_step
        + megapixels * tm.seconds_per_megapixel
    )
    every = int(opts.get("show_progress_every_n_steps") or 0)
    images: list[str] = []
    infotexts: list[str] = []
    interrupted = False
    model = state.loaded
    for b in range(n_iter):
        interrupted, _ = state.flags()
        if interrupted:
            break
        state.clear_skip()
        done, t0 = 0, time.monotonic()
        for p, pass_steps in enumerate(passes):
            for step in range(1, pass_steps + 1):
                state.set_step(b * len(passes) + p, n_iter * len(passes), step - 1, pass_steps)
                target = t0 + batch_seconds * (done + step) / total_steps
                hold(state, target - time.monotonic())
                interrupted, skipped = state.flags()
                if interrupted or skipped:
                    break
                state.set_step(b * len(passes) + p, n_iter * len(passes), step, pass_steps)
                if every and step % every == 0:
                    key = render.digest(prompt, seeds[b * batch_size], step, p)
                    state.set_preview(encode_b64(render.thumbnail(render.render(key, 64, 64))))
            else:
                done += pass_steps
                continue
            break
        size = (out_w, out_h) if done == total_steps else (width, height)
        for i in range(b * batch_size, (b + 1) * batch_size):
            params = {
                "Steps": steps,
                "Sampler": sampler,
                "CFG scale": float(v("cfg_scale")),
                "Seed": seeds[i],
                "Face restoration": opts["face_restoration_model"] if v("restore_faces") else None,
                "Size": f"{width}x{height}",
                "Model hash": model.hash if opts.get("add_model_hash_to_info") else None,
                "Model": model.name if opts.get("add_model_name_to_info") else None,
                "VAE hash": vae.hash if vae else None,
                "VAE": vae.name if vae else None,
                "Variation seed": subseeds[i] if strength > 0 else None,
                "Variation seed strength": strength if strength > 0 else None,
                "Seed resize from": _resize_from(v("seed_resize_from_w"), v("seed_resize_from_h")),
                "Denoising strength": denoise,
                "Clip skip": clip_skip if clip_skip > 1 else None,
                "ENSD": opts.get("eta_noise_seed_delta") or None,
                "RNG": opts.get("randn_source") if opts.get("randn_source") != "GPU" else None,
                "Tiling": "True" if v("tiling") else None,
                **extra,
            }
            text = create_infotext(prompt, negative, params)
            init = inits[i % len(inits)] if inits else None
            key = render.digest(
                kind, prompt, negative, seeds[i], size, sampler, schedule, steps, done,
                float(v("cfg_scale")), model.name, vae.name if vae else None, clip_skip,
                denoise, render.digest(init.tobytes()).hex() if init else None,
            )  # fmt: skip
            img = render.render(key, *size, init=init, strength=float(denoise or 1.0))
            images.append(encode_b64(render.encode_png(img, {"parameters": text})))
            infotexts.append(text)
        if interrupted:
            break
    info = {
        "prompt": prompt,
        "all_prompts": [prompt] * n,
        "negative_prompt": negative,
        "all_negative_prompts": [negative] * n,
        "seed": seed,
        "all_seeds": seeds,
        "subseed": subseed,
        "all_subseeds": subseeds,
        "subseed_strength": strength,
        "width": width,
        "height": height,
        "sampler_name": sampler,
        "cfg_scale": float(v("cfg_scale")),
        "steps": steps,
        "batch_size": batch_size,
        "restore_faces": bool(v("restore_faces")),
        "face_restoration_model": opts["face_restoration_model"] if v("restore_faces") else None,
        "sd_model_name": model.name,
        "sd_model_hash": model.hash,
        "sd_vae_name": vae.name if vae else None,
        "sd_vae_hash": vae.hash if vae else None,
        "seed_resize_from_w": v("seed_resize_from_w"),
        "seed_resize_from_h": v("seed_resize_from_h"),
        "denoising_strength": denoise,
        "extra_generation_params": {k: val for k, val in extra.items()},
        "index_of_first_image": 0,
        "infotexts": infotexts,
        "styles": list(v("styles") or []),
        "job_timestamp": state.job_timestamp,
        "clip_skip": clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": VERSION,
    }
    parameters = req.model_dump()
    if isinstance(req, Img2ImgRequest) and not v("include_init_images"):
        parameters["init_images"] = None
        parameters["mask"] = None
    return {
        "images": images if v("send_images") else [],
        "parameters": parameters,
        "info": json.dumps(info),
    }, interrupted


def _resize_from(w: int, h: int) -> str | None:
    return f"{w}x{h}" if w > 0 and h > 0 else None


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
