"""WebUIClient against the simulator over real HTTP: every call returns the A1111 shapes."""

from __future__ import annotations

import io

from PIL import Image

from stablenew.settings import WebUISettings
from stablenew.webui import WebUIClient
from stablenew.webui.simulator import SimServer
from tests.webui.conftest import Control, small_txt2img


def test_txt2img_returns_decoded_pngs_info_and_parameters(client: WebUIClient) -> None:
    result = client.txt2img(small_txt2img(batch_size=2))
    assert len(result.images) == 2
    assert Image.open(io.BytesIO(result.images[0])).size == (64, 64)
    assert result.seeds == [1234, 1235]
    assert result.parameters["steps"] == 5
    assert result.parameters["sampler_index"] == "Euler"  # defaults filled in the echo
    assert len(result.infotexts) == 2


def test_img2img_and_extras_and_png_info(client: WebUIClient) -> None:
    first = client.txt2img(small_txt2img())
    from stablenew.webui._images import to_data_uri

    init = [to_data_uri(first.images[0])]
    second = client.img2img({**small_txt2img(), "init_images": init, "denoising_strength": 0.5})
    assert second.parameters["init_images"] is None  # include_init_images=false
    assert "Denoising strength: 0.5" in second.infotexts[0]
    up = client.extra_single_image(
        {"image": to_data_uri(second.images[0]), "upscaler_1": "Lanczos", "upscaling_resize": 2}
    )
    assert Image.open(io.BytesIO(up.image)).size == (128, 128)
    assert up.html_info == "<p>Postprocess upscale by: 2.0, Postprocess upscaler: Lanczos</p>"
    info = client.png_info(up.image)
    assert info["info"] == second.infotexts[0]
    assert info["items"] == {"postprocessing": up.html_info[3:-4]}


def test_lists_options_and_control_calls(client: WebUIClient) -> None:
    models = client.sd_models()
    assert models[0]["title"] == "v1-5-pruned-emaonly.safetensors [6ce0161689]"
    assert client.samplers()[0]["name"] == "DPM++ 2M"
    assert {"name": "karras", "label": "Karras"}.items() <= client.schedulers()[2].items()
    assert any(u["name"] == "R-ESRGAN 4x+" for u in client.upscalers())
    assert client.sd_vae()[0]["model_name"] == "vae-ft-mse-840000-ema-pruned"
    assert client.loras()[0]["name"] == "add_detail"
    options = client.get_options()
    for key in ("sd_model_checkpoint", "sd_checkpoint_hash", "sd_vae", "samples_format",
                "CLIP_stop_at_last_layers", "eta_noise_seed_delta"):  # fmt: skip
        assert key in options
    client.set_options({"sd_model_checkpoint": "dreamshaper_8"})
    assert client.get_options()["sd_model_checkpoint"].startswith("dreamshaper_8.safetensors [")
    assert client.refresh_checkpoints() is None
    assert client.interrupt() is None
    assert client.skip() is None
    snap = client.progress()
    assert not snap.busy
    assert client.is_ready()


def test_from_settings_uses_credentials_and_timeouts(sim: SimServer, control: Control) -> None:
    settings = WebUISettings(url=sim.url, username="u", password="p", read_timeout=12.0)
    client = WebUIClient.from_settings(settings, password_override="q")
    assert client.read_timeout == 12.0
    assert "q" not in repr(client)
    assert repr(client) == f"WebUIClient({sim.url!r}, auth=('u', '***'))"
    client.close()


def test_credentials_in_url_are_moved_out_of_it(sim: SimServer) -> None:
    host = sim.url.removeprefix("http://")
    client = WebUIClient(f"http://user:s3cret@{host}/")
    assert client.base_url == sim.url
    assert "s3cret" not in repr(client)
