"""The requests AUTOMATIC1111's own API tests send (its ``test/`` folder: txt2img, img2img,
extras, utils) succeed against the simulator over real HTTP, and answer in A1111's shape.

These are our tests of the same requests, not A1111's files: their bodies are the payloads
those tests post (``simple_*_request`` and each test's change), their fixture images are made
here. ``docs/webui.md`` says how to run A1111's own files against ``stablenew webui-sim``.
"""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import requests
from PIL import Image, ImageDraw

from stablenew.webui.simulator import SimServer
from tests.webui.conftest import Control


def _data_uri(img: Image.Image) -> str:
    buf = io.BytesIO()
    img.save(buf, format="PNG")
    return "data:image/png;base64," + base64.b64encode(buf.getvalue()).decode()


@pytest.fixture(scope="module")
def init_image() -> str:
    img = Image.new("RGB", (128, 128), "white")
    ImageDraw.Draw(img).ellipse((20, 20, 108, 108), fill="orange")
    return _data_uri(img)


@pytest.fixture(scope="module")
def mask_image() -> str:
    mask = Image.new("L", (128, 128), 0)
    ImageDraw.Draw(mask).rectangle((32, 32, 96, 96), fill=255)
    return _data_uri(mask)


def _txt2img_body() -> dict[str, Any]:
    return {
        "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0, "enable_hr": False, "eta": 0,
        "firstphase_height": 0, "firstphase_width": 0, "height": 64, "n_iter": 1,
        "negative_prompt": "", "prompt": "example prompt", "restore_faces": False,
        "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0, "sampler_index": "Euler a",
        "seed": -1, "seed_resize_from_h": -1, "seed_resize_from_w": -1, "steps": 3,
        "styles": [], "subseed": -1, "subseed_strength": 0, "tiling": False, "width": 64,
    }  # fmt: skip


def _img2img_body(init: str) -> dict[str, Any]:
    return {
        "batch_size": 1, "cfg_scale": 7, "denoising_strength": 0.75, "eta": 0, "height": 64,
        "include_init_images": False, "init_images": [init], "inpaint_full_res": False,
        "inpaint_full_res_padding": 0, "inpainting_fill": 0, "inpainting_mask_invert": False,
        "mask": None, "mask_blur": 4, "n_iter": 1, "negative_prompt": "",
        "override_settings": {}, "prompt": "example prompt", "resize_mode": 0,
        "restore_faces": False, "s_churn": 0, "s_noise": 1, "s_tmax": 0, "s_tmin": 0,
        "sampler_index": "Euler a", "seed": -1, "seed_resize_from_h": -1,
        "seed_resize_from_w": -1, "steps": 3, "styles": [], "subseed": -1,
        "subseed_strength": 0, "tiling": False, "width": 64,
    }  # fmt: skip


def _post(sim: SimServer, path: str, body: dict[str, Any]) -> dict[str, Any]:
    r = requests.post(f"{sim.url}/sdapi/v1/{path}", json=body, timeout=30)
    assert r.status_code == 200, r.text
    data: dict[str, Any] = r.json()
    return data


def _sizes(data: dict[str, Any]) -> list[tuple[int, int]]:
    return [Image.open(io.BytesIO(base64.b64decode(i))).size for i in data["images"]]


TXT2IMG_CASES: dict[str, dict[str, Any]] = {
    "simple": {},
    "negative_prompt": {"negative_prompt": "example negative prompt"},
    "complex_prompt": {
        "prompt": "((emphasis)), (emphasis1:1.1), [to:1], [from::2], [from:to:0.3], [alt|alt1]"
    },
    "not_square": {"height": 128},
    "hrfix": {"enable_hr": True},
    "tiling": {"tiling": True},
    "restore_faces": {"restore_faces": True},
    "sampler_PLMS": {"sampler_index": "PLMS"},
    "sampler_DDIM": {"sampler_index": "DDIM"},
    "sampler_UniPC": {"sampler_index": "UniPC"},
    "multiple_batches": {"n_iter": 2},
    "batch": {"batch_size": 2},
}


@pytest.mark.parametrize("change", TXT2IMG_CASES.values(), ids=list(TXT2IMG_CASES))
def test_txt2img_requests(sim: SimServer, control: Control, change: dict[str, Any]) -> None:
    body = {**_txt2img_body(), **change}
    data = _post(sim, "txt2img", body)
    n = body["batch_size"] * body["n_iter"]
    scale = 2 if body["enable_hr"] else 1
    assert _sizes(data) == [(64 * scale, body["height"] * scale)] * n
    info = json.loads(data["info"])
    assert len(info["infotexts"]) == n
    if body["enable_hr"]:
        assert "Hires upscale: 2.0, Hires upscaler: Latent" in info["infotexts"][0]
    if body["sampler_index"] != "Euler a":
        assert info["sampler_name"] == body["sampler_index"]


def test_img2img_requests(
    sim: SimServer, control: Control, init_image: str, mask_image: str
) -> None:
    plain = _post(sim, "img2img", _img2img_body(init_image))
    assert _sizes(plain) == [(64, 64)]
    assert plain["parameters"]["init_images"] is None

    masked = _post(sim, "img2img", {**_img2img_body(init_image), "mask": mask_image})
    text = json.loads(masked["info"])["infotexts"][0]
    assert "Mask blur: 4, Masked content: fill" in text
    assert "Mask mode" not in text

    inverted = {**_img2img_body(init_image), "mask": mask_image, "inpainting_mask_invert": True}
    text = json.loads(_post(sim, "img2img", inverted)["info"])["infotexts"][0]
    assert "Mask mode: Inpaint not masked, Mask blur: 4" in text


def test_img2img_sd_upscale(sim: SimServer, control: Control, init_image: str) -> None:
    body = {
        **_img2img_body(init_image),
        "script_name": "sd upscale",
        "script_args": ["", 8, "Lanczos", 2.0],
    }
    data = _post(sim, "img2img", body)
    assert _sizes(data) == [(256, 256)]  # the 128x128 init image, upscaled twice
    text = json.loads(data["info"])["infotexts"][0]
    assert "Size: 64x64" in text  # the tile size
    assert "SD upscale overlap: 8, SD upscale upscaler: Lanczos" in text


def test_extras_requests(sim: SimServer, control: Control, init_image: str) -> None:
    body = {
        "resize_mode": 0, "show_extras_results": True, "gfpgan_visibility": 0,
        "codeformer_visibility": 0, "codeformer_weight": 0, "upscaling_resize": 2,
        "upscaling_resize_w": 128, "upscaling_resize_h": 128, "upscaling_crop": True,
        "upscaler_1": "Lanczos", "upscaler_2": "None", "extras_upscaler_2_visibility": 0,
        "image": init_image,
    }  # fmt: skip
    upscaled = _post(sim, "extra-single-image", body)
    assert Image.open(io.BytesIO(base64.b64decode(upscaled["image"]))).size == (256, 256)
    # A1111's png-info and interrogate tests post only an image (and an unknown key) here.
    assert _post(sim, "extra-single-image", {"image": init_image})["html_info"] == "<p></p>"
    _post(sim, "extra-single-image", {"image": init_image, "model": "clip"})


def test_options_write_reads_back(sim: SimServer, control: Control) -> None:
    url = f"{sim.url}/sdapi/v1/options"
    before = requests.get(url, timeout=5).json()["send_seed"]
    assert requests.post(url, json={"send_seed": not before}, timeout=5).status_code == 200
    assert requests.get(url, timeout=5).json()["send_seed"] is (not before)


@pytest.mark.parametrize(
    "path",
    [
        "cmd-flags",
        "samplers",
        "upscalers",
        "sd-models",
        "hypernetworks",
        "face-restorers",
        "realesrgan-models",
        "prompt-styles",
        "embeddings",
    ],
)
def test_list_endpoints(sim: SimServer, path: str) -> None:
    assert requests.get(f"{sim.url}/sdapi/v1/{path}", timeout=5).status_code == 200
