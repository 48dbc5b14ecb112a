"""The stage runner on real HTTP: the three-stage chain, request building from the record only,
progress polling during a slow job, interrupt and cancellation mid-run."""

from __future__ import annotations

import io
import threading
import time
from collections.abc import Callable

import pytest
from PIL import Image

from stablenew.errors import WebUIInterrupted
from stablenew.webui import (
    InterruptedGeneration,
    WebUIClient,
    build_txt2img_request,
    describe_requests,
    poll_progress,
    run_stages,
)
from tests.webui.conftest import Control, make_record, small_txt2img

THREE_STAGES = [
    {"type": "txt2img", "sampler": "DPM++ 2M", "scheduler": "Karras", "steps": 6,
     "cfg_scale": 7.0, "width": 64, "height": 96},
    {"type": "img2img", "sampler": "Euler a", "steps": 4, "cfg_scale": 5.0, "width": 64,
     "height": 96, "denoising_strength": 0.4},
    {"type": "upscale", "upscaler": "R-ESRGAN 4x+", "scale": 2.0},
]  # fmt: skip


def test_three_stage_chain(client: WebUIClient, control: Control) -> None:
    record = make_record(stages=THREE_STAGES, batch_size=2, clip_skip=2, model="dreamshaper_8")
    seen: list[str] = []
    result = run_stages(client, record, on_stage=lambda i, s: seen.append(f"{i}:{s.type}"))
    assert seen == ["0:txt2img", "1:img2img", "2:upscale"]
    assert result.job_id == record.job_id
    assert [img.seed for img in result.images] == [1234, 1235]
    for i, img in enumerate(result.images):
        assert Image.open(io.BytesIO(img.png)).size == (128, 192)  # txt2img size x scale
        assert img.infotext == result.stages[1].info["infotexts"][i]  # type: ignore[call-overload]
        assert img.infotext.startswith("a red fox in snow\nNegative prompt: blurry\nSteps: 4, ")
        assert f"Seed: {1234 + i}, Size: 64x96" in img.infotext
        assert "Model: dreamshaper_8" in img.infotext
        assert "Denoising strength: 0.4, Clip skip: 2" in img.infotext
        assert len(img.stage_seconds) == 3
        info = client.png_info(img.png)
        assert info["info"] == img.infotext
        assert info["items"]["postprocessing"].startswith("Postprocess upscale by: 2.0")
    txt = result.stages[0].info
    assert isinstance(txt, dict)
    assert "Schedule type: Karras" in txt["infotexts"][0]
    assert (
        result.stages[2].info
        == ["<p>Postprocess upscale by: 2.0, Postprocess upscaler: R-ESRGAN 4x+</p>"] * 2
    )
    # model switched once and stays loaded (override_settings_restore_afterwards=false)
    stats = control.stats()
    assert stats["counters"]["model_switches"] == 1
    assert [e["kind"] for e in stats["events"]] == ["txt2img", "img2img", "extras", "extras"]


def test_requests_come_from_the_record_only() -> None:
    record = make_record(stages=THREE_STAGES, vae=None)
    body = build_txt2img_request(record, record.stages[0])
    assert body["override_settings"] == {
        "sd_model_checkpoint": "v1-5-pruned-emaonly",
        "sd_vae": "Automatic",
        "CLIP_stop_at_last_layers": 1,
    }
    assert body["override_settings_restore_afterwards"] is False
    assert (body["sampler_name"], body["scheduler"], body["height"]) == ("DPM++ 2M", "Karras", 96)
    paths = [path for path, _ in describe_requests(record)]
    assert paths == ["/sdapi/v1/txt2img", "/sdapi/v1/img2img", "/sdapi/v1/extra-single-image"]
    assert describe_requests(record) == describe_requests(record)


def test_progress_during_a_slow_generation(client: WebUIClient, control: Control) -> None:
    control.timing(seconds_per_step=0.05)
    worker = threading.Thread(target=client.txt2img, args=(small_txt2img(steps=12),))
    worker.start()
    snaps = list(poll_progress(client, interval=0.05, timeout=10, idle_grace=2))
    worker.join(10)
    assert snaps, "never saw the job running"
    steps = [s.step for s in snaps if s.steps == 12]
    assert steps == sorted(steps)
    assert max(steps) >= 6
    assert all(s.job == "scripts_txt2img" and 0 < s.progress <= 1 for s in snaps if s.step)
    assert not client.progress().busy  # job_count back to 0


def test_interrupt_returns_partial_images(client: WebUIClient, control: Control) -> None:
    control.timing(seconds_per_step=0.02)
    worker, errors = _background(client.txt2img, small_txt2img(steps=50, n_iter=3, batch_size=2))
    _wait_for_step(client, 5)
    client.interrupt()
    worker.join(10)
    (err,) = errors
    assert isinstance(err, InterruptedGeneration)
    assert len(err.result.images) == 2  # the current batch only, answered with 200
    assert control.stats()["events"][-1]["interrupted"] is True


def test_interrupt_of_a_single_image_job_is_detected(client: WebUIClient, control: Control) -> None:
    control.timing(seconds_per_step=0.02)
    worker, errors = _background(client.txt2img, small_txt2img(steps=50))
    _wait_for_step(client, 3)
    client.interrupt()
    worker.join(10)
    assert isinstance(errors[0], InterruptedGeneration)
    assert len(errors[0].result.images) == 1  # same count as asked: found via server state


def test_cancel_event_stops_the_chain(client: WebUIClient, control: Control) -> None:
    control.timing(seconds_per_step=0.02)
    cancel = threading.Event()
    record = make_record(stages=[{**THREE_STAGES[0], "steps": 40}, *THREE_STAGES[1:]])
    worker, errors = _background(lambda: run_stages(client, record, cancel_event=cancel))
    _wait_for_step(client, 3)
    cancel.set()
    client.interrupt()
    worker.join(10)
    assert isinstance(errors[0], WebUIInterrupted)
    assert [e["kind"] for e in control.stats()["events"]] == ["txt2img"]


def test_cancel_before_start(client: WebUIClient) -> None:
    cancel = threading.Event()
    cancel.set()
    with pytest.raises(WebUIInterrupted, match="cancelled at stage 0"):
        run_stages(client, make_record(), cancel_event=cancel)


def _background(
    fn: Callable[..., object], *args: object
) -> tuple[threading.Thread, list[BaseException]]:
    """Run ``fn(*args)`` on a started thread; what it raises lands in the returned list."""
    errors: list[BaseException] = []

    def run() -> None:
        try:
            fn(*args)
        except BaseException as e:
            errors.append(e)

    worker = threading.Thread(target=run)
    worker.start()
    return worker, errors


def _wait_for_step(client: WebUIClient, step: int) -> None:
    for _ in range(500):
        if client.progress().step >= step:
            return
        time.sleep(0.01)
    raise AssertionError(f"job never reached step {step}")


def test_extensions_pack_renders_with_hires_scripts_and_extensions(
    client: WebUIClient, control: Control
) -> None:
    from pathlib import Path

    from stablenew.builder import build_jobs

    pack = Path(__file__).resolve().parents[2] / "configs" / "packs" / "extensions.yaml"
    (record,) = build_jobs(pack, generation_defaults={})
    result = run_stages(client, record)
    txt2img, img2img = result.stages
    assert isinstance(txt2img.info, dict)
    assert isinstance(img2img.info, dict)
    first = txt2img.info["infotexts"][0]
    assert "Size: 128x128," in first  # first pass; the hires pass makes 192x192
    assert (
        "Denoising strength: 0.5, Hires upscale: 1.5, Hires steps: 4, Hires upscaler: Latent"
        in first
    )
    assert (
        'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 0.8'
        in first
    )
    assert "ADetailer model: face_yolov8n.pt" in first
    assert "ADetailer denoising strength: 0.35" in first
    (image,) = result.images
    assert Image.open(io.BytesIO(image.png)).size == (384, 384)  # 192x192 through SD upscale x2
    assert "SD upscale overlap: 16, SD upscale upscaler: Lanczos" in image.infotext
    requests_made = describe_requests(record)
    assert requests_made[0][1]["enable_hr"] is True
    assert requests_made[1][1]["script_name"] == "SD upscale"
