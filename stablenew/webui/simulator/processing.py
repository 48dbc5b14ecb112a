"""One simulated ``process_images`` call: ``n_iter`` batches of ``batch_size`` images.

Mirrors what a client can observe of A1111's ``modules/processing.py``: seeds, sampler
resolution, hires fix (first-pass size in the infotext, second-pass size out), inpainting
masks, ``shared.state`` progress, interrupt and skip, the infotext (§7) and the info JSON (§4).
Scripts (``script_runs``) call it once or several times per request.
"""

from __future__ import annotations

import hashlib
import re
import time
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any

from PIL import Image, ImageOps

from stablenew.webui._images import encode_b64
from stablenew.webui.simulator import render
from stablenew.webui.simulator.infotext import VERSION, create_infotext
from stablenew.webui.simulator.schemas import Img2ImgRequest, Txt2ImgRequest
from stablenew.webui.simulator.state import SimState

_LORA_RE = re.compile(r"<lora:([^:>]+)(?::[^>]*)?>")
_FILLS = ("fill", "original", "latent noise", "latent nothing")
Request = Txt2ImgRequest | Img2ImgRequest


@dataclass
class Batch:
    """What one ``process_images`` call produced (A1111's ``Processed``)."""

    images: list[Image.Image] = field(default_factory=list)
    infotexts: list[str] = field(default_factory=list)
    info: dict[str, Any] = field(default_factory=dict)
    interrupted: bool = False


@dataclass(frozen=True)
class Hires:
    """The second pass of a txt2img job with ``enable_hr``."""

    width: int
    height: int
    steps: int
    params: dict[str, Any]


def hires_pass(state: SimState, req: Txt2ImgRequest) -> tuple[int, int, Hires | None]:
    """First-pass size and the hires pass, as ``StableDiffusionProcessingTxt2Img.init``."""
    v = req.value
    width, height = int(v("width")), int(v("height"))
    if not v("enable_hr"):
        return width, height, None
    resize_x, resize_y = int(v("hr_resize_x")), int(v("hr_resize_y"))
    fp_w, fp_h = int(v("firstphase_width")), int(v("firstphase_height"))
    if fp_w or fp_h:  # pre-1.0 hires API: width/height are the final size
        resize_x, resize_y = width, height
        width, height = fp_w or 512, fp_h or 512
    scale = float(v("hr_scale"))
    if resize_x == 0 and resize_y == 0:
        out_w, out_h = int(width * scale), int(height * scale)
    elif resize_y == 0:
        out_w, out_h = resize_x, resize_x * height // width
    elif resize_x == 0:
        out_w, out_h = resize_y * width // height, resize_y
    else:
        out_w, out_h = resize_x, resize_y
    upscaler = v("hr_upscaler") or "Latent"
    inv = state.inventory
    if upscaler not in inv.latent_upscale_modes and inv.upscaler(upscaler) is None:
        raise RuntimeError(f"could not find upscaler named {upscaler}")
    hr_sampler = v("hr_sampler_name")
    known = any(s.name == hr_sampler for s in inv.samplers)
    if hr_sampler and hr_sampler != "Use same sampler" and not known:
        raise AssertionError(f"bad sampler name: {hr_sampler}")
    steps = int(v("hr_second_pass_steps"))
    params: dict[str, Any] = {}
    if hr_sampler and hr_sampler != "Use same sampler":
        params["Hires sampler"] = hr_sampler
    if v("hr_scheduler") and v("hr_scheduler") != "Use same scheduler":
        params["Hires schedule type"] = v("hr_scheduler")
    if v("hr_prompt") and v("hr_prompt") != v("prompt"):
        params["Hires prompt"] = v("hr_prompt")
    if v("hr_negative_prompt") and v("hr_negative_prompt") != v("negative_prompt"):
        params["Hires negative prompt"] = v("hr_negative_prompt")
    if v("hr_checkpoint_name") and v("hr_checkpoint_name") != "Use same checkpoint":
        params["Hires checkpoint"] = v("hr_checkpoint_name")
    if resize_x == 0 and resize_y == 0:
        params["Hires upscale"] = scale
    else:
        params["Hires resize"] = f"{resize_x}x{resize_y}"
    params["Hires steps"] = steps or None
    params["Hires upscaler"] = upscaler
    return width, height, Hires(out_w, out_h, steps, params)


def _mask_params(req: Img2ImgRequest) -> dict[str, Any]:
    v = req.value
    params: dict[str, Any] = {}
    if v("inpainting_mask_invert"):
        params["Mask mode"] = "Inpaint not masked"
    blur = req.mask_blur if req.mask_blur is not None else v("mask_blur_x")
    if blur:
        params["Mask blur"] = blur
    fill = int(v("inpainting_fill"))
    if fill != 1 and 0 <= fill < len(_FILLS):
        params["Masked content"] = _FILLS[fill]
    if v("inpaint_full_res"):
        params["Inpaint area"] = "Only masked"
        params["Masked area padding"] = v("inpaint_full_res_padding")
    return params


def process(
    state: SimState,
    kind: str,
    req: Request,
    inits: list[Image.Image],
    opts: dict[str, Any],
    *,
    mask: Image.Image | None = None,
    extra_params: Mapping[str, Any] | None = None,
) -> Batch:
    """Run one job's batches (the caller holds ``state.lock`` and has called ``begin``)."""
    v = req.value
    inv = state.inventory
    batch_size, n_iter, steps = int(v("batch_size")), int(v("n_iter")), int(v("steps"))
    if len(inits) > 1:
        if len(inits) > batch_size:
            raise RuntimeError(
                f"bad number of images passed: {len(inits)}; expecting {batch_size} or less"
            )
        batch_size = len(inits)
    hires: Hires | None = None
    if isinstance(req, Txt2ImgRequest):
        width, height, hires = hires_pass(state, req)
    else:
        width, height = int(v("width")), int(v("height"))
    sampler, schedule = inv.resolve_sampler(req.sampler_name or v("sampler_index"), req.scheduler)
    prompt, negative = inv.apply_styles(v("prompt"), v("negative_prompt"), v("styles") or [])
    n = batch_size * n_iter
    seed = int(v("seed")) if v("seed") != -1 else state.random_seed()
    subseed = int(v("subseed")) if v("subseed") != -1 else state.random_seed()
    strength = float(v("subseed_strength"))
    seeds = [seed + (i if strength == 0 else 0) for i in range(n)]
    subseeds = [subseed + i for i in range(n)]
    out_w, out_h = (hires.width, hires.height) if hires else (width, height)
    passes = [steps] + ([hires.steps or steps] if hires else [])
    vae = inv.vae(opts.get("sd_vae"))
    clip_skip = int(opts.get("CLIP_stop_at_last_layers") or 1)
    denoise = v("denoising_strength") if (kind == "img2img" or hires) else None
    extra: dict[str, Any] = {"Schedule type": schedule}
    if hires:
        extra.update(hires.params)
    if isinstance(req, Img2ImgRequest) and mask is not None:
        extra.update(_mask_params(req))
    loras = [m.group(1) for m in _LORA_RE.finditer(prompt)]
    known = [lo for lo in inv.loras if lo.name in loras]
    if known:
        extra["Lora hashes"] = ", ".join(
            f"{lo.name}: {hashlib.sha256((lo.sha256 or lo.name).encode()).hexdigest()[:12]}"
            for lo in known
        )
    extra.update(extra_params or {})
    tm = state.timing
    megapixels = out_w * out_h / 1_000_000
    total_steps = sum(passes)
    batch_seconds = batch_size * (
        tm.seconds_per_image
        + total_steps * tm.seconds_per_step
        + megapixels * tm.seconds_per_megapixel
    )
    every = int(opts.get("show_progress_every_n_steps") or 0)
    result = Batch()
    model = state.loaded
    for b in range(n_iter):
        result.interrupted, _ = state.flags()
        if result.interrupted:
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
                    result.interrupted = interrupted
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
            if init is not None and mask is not None:
                img = _inpaint(img, init, mask, bool(v("inpainting_mask_invert")))
            result.images.append(img)
            result.infotexts.append(text)
        if result.interrupted:
            break
    result.info = {
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
        "extra_generation_params": dict(extra),
        "index_of_first_image": 0,
        "infotexts": result.infotexts,
        "styles": list(v("styles") or []),
        "job_timestamp": state.job_timestamp,
        "clip_skip": clip_skip,
        "is_using_inpainting_conditioning": False,
        "version": VERSION,
    }
    return result


def hold(state: SimState, seconds: float) -> None:
    """Sleep, cut short by interrupt/skip/reset (``state.abort``)."""
    if seconds > 0:
        state.abort.wait(seconds)


def _inpaint(img: Image.Image, init: Image.Image, mask: Image.Image, invert: bool) -> Image.Image:
    """Keep the init image outside the mask (white = repaint), as the overlay A1111 pastes."""
    size = img.size
    m = mask.convert("L").resize(size)
    if invert:
        m = ImageOps.invert(m)
    return Image.composite(img, init.convert("RGB").resize(size), m)


def _resize_from(w: int, h: int) -> str | None:
    return f"{w}x{h}" if w > 0 and h > 0 else None
