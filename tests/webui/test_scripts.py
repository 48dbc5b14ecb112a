"""Scripts and extensions on the simulator, over real HTTP: the full default option set, the
script listings, each shipped selectable script's answer in shape (count, size, infotext),
ControlNet / ADetailer recorded in the infotext, hires fix, and A1111's refusals."""

from __future__ import annotations

import base64
import io
import json
from typing import Any

import pytest
import requests
from PIL import Image

from stablenew.webui.simulator import SimServer
from tests.webui.conftest import Control, small_txt2img


def _post(sim: SimServer, path: str, body: dict[str, Any], status: int = 200) -> dict[str, Any]:
    r = requests.post(f"{sim.url}/sdapi/v1/{path}", json=body, timeout=30)
    assert r.status_code == status, r.text
    data: dict[str, Any] = r.json()
    return data


def _answer(data: dict[str, Any]) -> tuple[list[tuple[int, int]], dict[str, Any]]:
    sizes = [Image.open(io.BytesIO(base64.b64decode(i))).size for i in data["images"]]
    return sizes, json.loads(data["info"])


def _init(size: tuple[int, int] = (64, 64)) -> str:
    buf = io.BytesIO()
    Image.new("RGB", size, "teal").save(buf, format="PNG")
    return base64.b64encode(buf.getvalue()).decode()


def test_options_hold_the_full_default_set_and_keep_what_is_written(
    sim: SimServer, control: Control
) -> None:
    url = f"{sim.url}/sdapi/v1/options"
    options = requests.get(url, timeout=5).json()
    assert len(options) > 300
    for key in ("send_seed", "grid_format", "sd_unet", "eta_ancestral", "hires_fix_refiner_pass"):
        assert key in options
    assert options["sd_model_checkpoint"].startswith("v1-5-pruned-emaonly.safetensors [")
    requests.post(url, json={"jpeg_quality": 55, "some_extension_option": [1, 2]}, timeout=5)
    after = requests.get(url, timeout=5).json()
    assert after["jpeg_quality"] == 55
    assert after["some_extension_option"] == [1, 2]


def test_script_listings(sim: SimServer) -> None:
    listing = requests.get(f"{sim.url}/sdapi/v1/scripts", timeout=5).json()
    assert {"prompt matrix", "x/y/z plot", "controlnet", "adetailer"} <= set(listing["txt2img"])
    assert {"sd upscale", "loopback", "outpainting mk2"} <= set(listing["img2img"])
    assert "sd upscale" not in listing["txt2img"]
    info = requests.get(f"{sim.url}/sdapi/v1/script-info", timeout=5).json()
    upscale = next(i for i in info if i["name"] == "sd upscale")
    assert upscale["is_img2img"] is True
    assert upscale["is_alwayson"] is False
    assert [a["label"] for a in upscale["args"]][1:] == ["Tile overlap", "Upscaler", "Scale Factor"]
    assert any(i["name"] == "controlnet" and i["is_alwayson"] for i in info)
    extensions = requests.get(f"{sim.url}/sdapi/v1/extensions", timeout=5).json()
    assert {e["name"] for e in extensions} == {"sd-webui-controlnet", "adetailer"}


@pytest.mark.parametrize(
    ("path", "change", "detail"),
    [
        ("txt2img", {"script_name": "SD upscale"}, "Script 'SD upscale' not found"),
        ("txt2img", {"script_name": "controlnet"}, "Script 'controlnet' not found"),
        ("txt2img", {"alwayson_scripts": {"nope": {"args": []}}}, "Script 'nope' not found"),
        (
            "txt2img",
            {"alwayson_scripts": {"prompt matrix": {"args": []}}},
            "Cannot have a selectable script in the always on scripts params",
        ),
    ],
)
def test_unknown_scripts_are_refused_like_a1111(
    sim: SimServer, control: Control, path: str, change: dict[str, Any], detail: str
) -> None:
    body = _post(sim, path, small_txt2img(**change), status=422)
    assert body == {"error": "HTTPException", "detail": detail, "body": "", "errors": ""}
    assert control.stats()["counters"]["requests"] == 0  # refused before queueing


def test_prompt_matrix_returns_grid_then_every_combination(
    sim: SimServer, control: Control
) -> None:
    body = small_txt2img(prompt="a fox|in snow|at night", script_name="Prompt matrix")
    sizes, info = _answer(_post(sim, "txt2img", body))
    assert sizes == [(128, 128)] + [(64, 64)] * 4  # 2x2 grid first, then 4 images
    assert info["index_of_first_image"] == 1
    assert info["all_prompts"] == [
        "a fox",
        "a fox, in snow",
        "a fox, at night",
        "a fox, in snow, at night",
    ]
    assert len(info["infotexts"]) == 5


def test_prompts_from_textbox_runs_one_job_per_line(sim: SimServer, control: Control) -> None:
    lines = 'a cat\n\n--prompt "a dog" --steps 2 --batch_size 2\n'
    body = small_txt2img(
        prompt="photo",
        script_name="prompts from file or textbox",
        script_args=[True, False, "start", lines],
    )
    sizes, info = _answer(_post(sim, "txt2img", body))
    assert len(sizes) == 3
    assert info["all_prompts"] == ["a cat photo", "a dog photo", "a dog photo"]
    assert info["all_seeds"] == [1234, 1235, 1236]
    assert "Steps: 2," in info["infotexts"][2]
    bad = small_txt2img(
        script_name="prompts from file or textbox", script_args=[0, 0, "start", "--nope 1"]
    )
    assert _post(sim, "txt2img", bad, status=500)["errors"] == "Unknown commandline option: nope"


def test_xyz_plot_grid_and_lone_images(sim: SimServer, control: Control) -> None:
    args = [4, "2,3", [], 6, "5, 7", [], 0, "", [], True, False, False, False, False, True, False]
    body = small_txt2img(script_name="X/Y/Z plot", script_args=args)
    sizes, info = _answer(_post(sim, "txt2img", body))
    assert sizes == [(128, 128)] + [(64, 64)] * 4  # the grid, then the 4 cells
    grid_text, *cells = info["infotexts"]
    assert 'Script: X/Y/Z plot, X Type: Steps, X Values: "2,3", Y Type: CFG Scale' in grid_text
    assert ["Steps: 2" in t for t in cells] == [True, False, True, False]
    assert ["CFG scale: 7.0" in t for t in cells] == [False, False, True, True]


def test_loopback_returns_a_grid_and_every_loop(sim: SimServer, control: Control) -> None:
    body = {
        **small_txt2img(),
        "init_images": [_init()],
        "denoising_strength": 0.6,
        "script_name": "loopback",
        "script_args": [3, 0.3, "Linear", "None"],
    }
    sizes, info = _answer(_post(sim, "img2img", body))
    assert sizes == [(192, 64)] + [(64, 64)] * 3
    assert "Final denoising strength: 0.3, Denoising curve: Linear" in info["infotexts"][0]


def test_controlnet_and_adetailer_are_recorded_in_the_infotext(
    sim: SimServer, control: Control
) -> None:
    units = [{"module": "canny", "model": "control_v11p_sd15_canny [d14c016b]"}]
    faces, hands = {"ad_model": "face_yolov8n.pt"}, {"ad_model": "hand_yolov8n.pt"}
    body = small_txt2img(
        alwayson_scripts={
            "controlnet": {"args": [*units, {"enabled": False}]},
            "ADetailer": {"args": [True, False, faces, hands]},
            "Refiner": {"args": [False, "", 0.8]},
        }
    )  # fmt: skip
    _, info = _answer(_post(sim, "txt2img", body))
    text = info["infotexts"][0]
    assert (
        'ControlNet 0: "Module: canny, Model: control_v11p_sd15_canny [d14c016b], Weight: 1.0,'
        in text
    )
    assert "ControlNet 1" not in text
    assert "ADetailer model: face_yolov8n.pt, ADetailer confidence: 0.3," in text
    assert "ADetailer model 2nd: hand_yolov8n.pt" in text
    assert text.endswith("ADetailer version: 24.9.0, Version: v1.10.1")
    # webuiapi's disabled placeholders are accepted and write nothing.
    plain = small_txt2img(
        alwayson_scripts={"ControlNet": {"args": []}, "ADetailer": {"args": [False]}}
    )
    assert "ControlNet" not in _answer(_post(sim, "txt2img", plain))[1]["infotexts"][0]


def test_hires_fix_sizes_infotext_and_errors(sim: SimServer, control: Control) -> None:
    body = small_txt2img(
        enable_hr=True, hr_resize_x=160, hr_upscaler="R-ESRGAN 4x+", hr_second_pass_steps=3,
        hr_sampler_name="Euler", denoising_strength=0.4, hr_prompt="a fox, sharp",
    )  # fmt: skip
    sizes, info = _answer(_post(sim, "txt2img", body))
    assert sizes == [(160, 160)]
    assert (info["width"], info["height"]) == (64, 64)  # first pass
    text = info["infotexts"][0]
    assert "Size: 64x64," in text
    assert "Denoising strength: 0.4, Hires sampler: Euler, " in text
    assert 'Hires prompt: "a fox, sharp", Hires resize: 160x0, Hires steps: 3, ' in text
    assert "Hires upscaler: R-ESRGAN 4x+" in text
    bad = _post(sim, "txt2img", small_txt2img(enable_hr=True, hr_upscaler="Nope"), status=500)
    assert bad["errors"] == "could not find upscaler named Nope"
    old_style = small_txt2img(
        enable_hr=True, width=128, height=128, firstphase_width=64, firstphase_height=64
    )
    sizes, info = _answer(_post(sim, "txt2img", old_style))
    assert sizes == [(128, 128)]
    assert "Size: 64x64" in info["infotexts"][0]
