"""The simulator answers like A1111 1.10 (reference §9): deterministic PNGs with §7 infotexts,
§4 info keys, sampler resolution, FIFO serialization, options, timing, control API, CLI."""

from __future__ import annotations

import itertools
import json
import threading
import time

import pytest
import requests
from typer.testing import CliRunner

from stablenew.cli.app import app as cli_app
from stablenew.errors import WebUIUnreachable
from stablenew.webui import WebUIClient
from stablenew.webui.simulator import SimConfig, SimServer, TimingConfig
from stablenew.webui.simulator.infotext import parse_generation_parameters
from tests.webui.conftest import Control, small_txt2img

INFO_KEYS = [
    "prompt", "all_prompts", "negative_prompt", "all_negative_prompts", "seed", "all_seeds",
    "subseed", "all_subseeds", "subseed_strength", "width", "height", "sampler_name",
    "cfg_scale", "steps", "batch_size", "restore_faces", "face_restoration_model",
    "sd_model_name", "sd_model_hash", "sd_vae_name", "sd_vae_hash", "seed_resize_from_w",
    "seed_resize_from_h", "denoising_strength", "extra_generation_params",
    "index_of_first_image", "infotexts", "styles", "job_timestamp", "clip_skip",
    "is_using_inpainting_conditioning", "version",
]  # fmt: skip


def test_same_request_gives_the_same_bytes(client: WebUIClient) -> None:
    a = client.txt2img(small_txt2img(batch_size=2))
    b = client.txt2img(small_txt2img(batch_size=2))
    assert a.images == b.images
    assert a.images[0] != a.images[1]  # seed+1
    assert client.txt2img(small_txt2img(prompt="a cat")).images[0] != a.images[0]


def test_info_json_and_infotext_format(sim: SimServer, control: Control) -> None:
    r = requests.post(f"{sim.url}/sdapi/v1/txt2img", json=small_txt2img(width=512), timeout=10)
    assert r.status_code == 200
    assert "x-process-time" in r.headers
    body = r.json()
    assert isinstance(body["info"], str)
    info = json.loads(body["info"])
    assert list(info) == INFO_KEYS
    assert info["infotexts"][0] == (
        "a red fox in snow\nNegative prompt: blurry\nSteps: 5, Sampler: DPM++ 2M, "
        "Schedule type: Karras, CFG scale: 7.0, Seed: 1234, Size: 512x64, "
        "Model hash: 6ce0161689, Model: v1-5-pruned-emaonly, Version: v1.10.1"
    )
    assert info["extra_generation_params"] == {"Schedule type": "Karras"}
    assert info["version"] == "v1.10.1"
    assert body["parameters"]["styles"] is None
    assert not body["images"][0].startswith("data:")


def test_png_info_round_trip_and_quoting(client: WebUIClient) -> None:
    prompt = "portrait, <lora:add_detail:0.6>, golden hour"
    result = client.txt2img(small_txt2img(prompt=prompt, negative_prompt="", seed=-1))
    text = result.infotexts[0]
    assert "Negative prompt" not in text
    assert 'Lora hashes: "add_detail: ' in text
    parsed = client.png_info(result.images[0])
    assert parsed["info"] == text
    params = parsed["parameters"]
    assert params["Prompt"] == prompt
    assert (params["Size-1"], params["Size-2"]) == ("64", "64")
    assert params["Seed"] == str(result.seeds[0])
    assert params["Lora hashes"].startswith("add_detail: ")
    assert params["Clip skip"] == "1"  # default filled
    assert parse_generation_parameters(text) == params


@pytest.mark.parametrize(
    ("sampler", "scheduler", "expected"),
    [
        ("DPM++ 2M Karras", None, ("DPM++ 2M", "Karras")),
        ("Euler a", None, ("Euler a", "Automatic")),
        ("Euler", "karras", ("Euler", "Karras")),
        ("k_euler_a", None, ("DPM++ 2M", "Karras")),  # aliases are not accepted: fallback
        ("no such sampler", "nope", ("DPM++ 2M", "Karras")),
        (None, None, ("Euler", "Automatic")),  # sampler_index "Euler" is the default
    ],
)
def test_sampler_resolution(
    client: WebUIClient, sampler: str | None, scheduler: str | None, expected: tuple[str, str]
) -> None:
    body = small_txt2img(sampler_name=sampler, scheduler=scheduler)
    result = client.txt2img(body)
    assert result.info["sampler_name"] == expected[0]
    assert f"Sampler: {expected[0]}, Schedule type: {expected[1]}," in result.infotexts[0]


def test_fifo_order_of_concurrent_requests(client: WebUIClient, control: Control) -> None:
    control.timing(seconds_per_step=0.01)
    threads = []
    for i in range(4):
        t = threading.Thread(target=client.txt2img, args=(small_txt2img(prompt=f"p{i}", steps=8),))
        t.start()
        threads.append(t)
        for _ in range(300):  # let request i reach the lock before sending i+1
            stats = control.stats()
            if stats["busy"] and stats["queued"] >= i:
                break
            time.sleep(0.005)
    for t in threads:
        t.join(10)
    events = control.stats()["events"]
    assert [e["prompt"] for e in events] == ["p0", "p1", "p2", "p3"]
    assert all(a["end"] <= b["start"] for a, b in itertools.pairwise(events))


def test_model_switch_and_restore(client: WebUIClient, control: Control) -> None:
    control.timing(model_switch_seconds=0.05)
    overrides = {"sd_model_checkpoint": "sd_xl_base_1.0"}
    r = client.txt2img(small_txt2img(override_settings=overrides))
    assert r.info["sd_model_name"] == "sd_xl_base_1.0"
    # default restore_afterwards=true: switched back after the job
    assert client.get_options()["sd_model_checkpoint"].startswith("v1-5-pruned-emaonly")
    client.txt2img(
        small_txt2img(override_settings=overrides, override_settings_restore_afterwards=False)
    )
    client.txt2img(
        small_txt2img(override_settings=overrides, override_settings_restore_afterwards=False)
    )
    stats = control.stats()
    assert stats["counters"]["model_switches"] == 3
    assert stats["loaded_model"].startswith("sd_xl_base_1.0")
    assert stats["events"][0]["end"] - stats["events"][0]["start"] >= 0.1


def test_seconds_per_image_timing(client: WebUIClient, control: Control) -> None:
    control.timing(seconds_per_image=0.1, seconds_per_step=0)
    client.txt2img(small_txt2img(batch_size=2))
    event = control.stats()["events"][0]
    assert 0.2 <= event["end"] - event["start"] < 0.5


def test_control_api_validates_and_resets(sim: SimServer, control: Control) -> None:
    assert control.faults(fail_next=2)["fail_next"] == 2
    bad = requests.post(f"{sim.url}/stablenew-sim/v1/faults", json={"oom_rate": 3}, timeout=5)
    assert bad.status_code == 422
    control.reset()
    stats = control.stats()
    assert stats["events"] == []
    assert stats["counters"]["requests"] == 0
    assert requests.get(f"{sim.url}/stablenew-sim/v1/faults", timeout=5).json()["fail_next"] == 0


def test_idle_progress_shape_and_unknown_route(sim: SimServer, control: Control) -> None:
    body = requests.get(f"{sim.url}/sdapi/v1/progress", timeout=5).json()
    assert body["progress"] == 0
    assert body["eta_relative"] == 0
    assert body["current_image"] is None
    assert body["textinfo"] is None
    assert len(body["state"]) == 9
    assert body["state"]["job_count"] == 0
    r = requests.get(f"{sim.url}/sdapi/v1/nope", timeout=5)
    assert (r.status_code, r.json()) == (404, {"detail": "Not Found"})
    paths = "cmd-flags memory embeddings prompt-styles face-restorers scripts hypernetworks"
    for path in paths.split():
        assert requests.get(f"{sim.url}/sdapi/v1/{path}", timeout=5).status_code == 200


def test_startup_delay_and_wait_until_ready() -> None:
    config = SimConfig(port=0, timing=TimingConfig(startup_seconds=0.4))
    server = SimServer(config)
    server.start(wait=False)
    try:
        client = WebUIClient(server.url, connect_timeout=0.5)
        assert not client.is_ready()
        with pytest.raises(WebUIUnreachable, match="not ready"):
            client.wait_until_ready(0.05, interval=0.01)
        client.wait_until_ready(5, interval=0.05)
        assert client.is_ready()
    finally:
        server.stop()


def test_cli_registers_webui_sim() -> None:
    result = CliRunner().invoke(cli_app, ["webui-sim", "--help"])
    assert result.exit_code == 0
    assert "--seconds-per-image" in result.output
    assert "--fail-nth" in result.output
