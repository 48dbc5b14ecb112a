"""Pure builders of the WebUI request bodies for one record's stages.

The request comes from the record alone (nothing is merged or re-resolved here), so
:func:`describe_requests` can show exactly what a job will send before it runs.

Model, VAE and clip skip travel in ``override_settings`` with
``override_settings_restore_afterwards = False``: A1111 would otherwise reload the previous
checkpoint after every job (a second model switch, under the generation lock), while every
record names its model/VAE/clip skip explicitly, so what a job leaves loaded never leaks into
the next one. A record without a VAE sends ``sd_vae: "Automatic"`` for the same reason.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from stablenew.records import NormalizedJobRecord, StageSpec
from stablenew.webui._images import to_data_uri

TXT2IMG_PATH = "/sdapi/v1/txt2img"
IMG2IMG_PATH = "/sdapi/v1/img2img"
UPSCALE_PATH = "/sdapi/v1/extra-single-image"
PLACEHOLDER_IMAGE = "<image from the previous stage>"


def override_settings(record: NormalizedJobRecord) -> dict[str, Any]:
    """Per-job options: checkpoint, VAE and clip skip."""
    return {
        "sd_model_checkpoint": record.model,
        "sd_vae": record.vae or "Automatic",
        "CLIP_stop_at_last_layers": record.clip_skip,
    }


def _generation_fields(record: NormalizedJobRecord, stage: StageSpec) -> dict[str, Any]:
    return {
        "prompt": record.prompt,
        "negative_prompt": record.negative_prompt,
        "seed": record.seed,
        "subseed": -1,
        "subseed_strength": 0.0,
        "sampler_name": stage.sampler,
        "scheduler": stage.scheduler,
        "steps": stage.steps,
        "cfg_scale": stage.cfg_scale,
        "width": stage.width,
        "height": stage.height,
        "batch_size": record.batch_size,
        "n_iter": 1,
        "override_settings": override_settings(record),
        "override_settings_restore_afterwards": False,
        "send_images": True,
        "save_images": False,
    }


def _script_fields(stage: StageSpec) -> dict[str, Any]:
    """``script_name``/``script_args`` and ``alwayson_scripts``, only when the stage has them."""
    body: dict[str, Any] = {}
    if stage.script is not None:
        body["script_name"] = stage.script.name
        body["script_args"] = list(stage.script.args)
    if stage.alwayson_scripts:
        body["alwayson_scripts"] = {
            title: {"args": list(spec.args)} for title, spec in stage.alwayson_scripts.items()
        }
    return body


def hires_fields(stage: StageSpec) -> dict[str, Any]:
    """``enable_hr`` and the ``hr_*`` fields of a txt2img stage with hires fix (else ``{}``).

    ``denoising_strength`` is always sent: A1111's API model defaults it to ``None`` for
    txt2img (reference §3.0), which a hires pass cannot use.
    """
    hr = stage.hires
    if hr is None:
        return {}
    body: dict[str, Any] = {
        "enable_hr": True,
        "hr_scale": hr.scale,
        "hr_resize_x": hr.resize_x,
        "hr_resize_y": hr.resize_y,
        "hr_upscaler": hr.upscaler,
        "hr_second_pass_steps": hr.steps,
        "denoising_strength": hr.denoising_strength,
    }
    optional = {
        "hr_sampler_name": hr.sampler,
        "hr_scheduler": hr.scheduler,
        "hr_checkpoint_name": hr.checkpoint,
        "hr_prompt": hr.prompt,
        "hr_negative_prompt": hr.negative_prompt,
    }
    body.update((k, v) for k, v in optional.items() if v is not None)
    return body


def build_txt2img_request(record: NormalizedJobRecord, stage: StageSpec) -> dict[str, Any]:
    """Body of ``POST /sdapi/v1/txt2img`` for a txt2img stage of ``record``."""
    _expect(stage, "txt2img")
    return {**_generation_fields(record, stage), **hires_fields(stage), **_script_fields(stage)}


def build_img2img_request(
    record: NormalizedJobRecord, stage: StageSpec, init_images: Sequence[bytes] = ()
) -> dict[str, Any]:
    """Body of ``POST /sdapi/v1/img2img``, fed the previous stage's PNGs (data URIs).

    Without ``init_images`` (a preview), one placeholder per expected image is shown.
    """
    _expect(stage, "img2img")
    body = _generation_fields(record, stage)
    images = [to_data_uri(png) for png in init_images] or [PLACEHOLDER_IMAGE] * record.batch_size
    body.update(
        init_images=images,
        batch_size=len(images),
        denoising_strength=stage.denoising_strength,
        resize_mode=0,
        include_init_images=False,
    )
    body.update(_script_fields(stage))
    return body


def build_upscale_request(
    record: NormalizedJobRecord, stage: StageSpec, image: bytes | None = None
) -> dict[str, Any]:
    """Body of ``POST /sdapi/v1/extra-single-image`` for one image (``None``: a preview)."""
    _ = record  # the upscale stage needs nothing else from the record
    _expect(stage, "upscale")
    return {
        "image": to_data_uri(image) if image is not None else PLACEHOLDER_IMAGE,
        "resize_mode": 0,
        "upscaling_resize": stage.scale,
        "upscaler_1": stage.upscaler,
        "show_extras_results": True,
    }


def describe_requests(record: NormalizedJobRecord) -> list[tuple[str, dict[str, Any]]]:
    """``(path, body)`` of every call the record's stage chain makes, images as placeholders."""
    calls: list[tuple[str, dict[str, Any]]] = []
    for stage in record.stages:
        if stage.type == "txt2img":
            calls.append((TXT2IMG_PATH, build_txt2img_request(record, stage)))
        elif stage.type == "img2img":
            calls.append((IMG2IMG_PATH, build_img2img_request(record, stage)))
        else:
            calls.append((UPSCALE_PATH, build_upscale_request(record, stage)))
    return calls


def _expect(stage: StageSpec, kind: str) -> None:
    if stage.type != kind:
        raise ValueError(f"expected a {kind} stage, got {stage.type}")
