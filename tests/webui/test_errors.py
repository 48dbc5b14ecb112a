"""Every failure maps to one WebUIError subclass (via the simulator's fault injection), auth
works as ``--api-auth`` does, and the password never reaches exception text or logs."""

from __future__ import annotations

import json
import logging
import socket
import threading
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

import pytest

from stablenew.errors import (
    WebUIAuthError,
    WebUIError,
    WebUIOutOfMemory,
    WebUIRequestRejected,
    WebUIServerError,
    WebUITimeout,
    WebUIUnreachable,
)
from stablenew.webui import WebUIClient
from stablenew.webui._images import to_data_uri
from stablenew.webui.simulator import SimConfig, SimServer, TimingConfig
from tests.webui.conftest import Control, small_txt2img

PASSWORD = "hunter2-very-secret"


def test_unreachable_when_nothing_listens() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = WebUIClient(f"http://127.0.0.1:{port}", connect_timeout=1.0)
    with pytest.raises(WebUIUnreachable) as e:
        client.progress()
    assert e.value.retryable
    assert not client.is_ready()


def test_timeout_when_the_server_hangs(client: WebUIClient, control: Control) -> None:
    control.faults(hang_seconds=5)
    with pytest.raises(WebUITimeout) as e:
        client.txt2img(small_txt2img(), read_timeout=0.3)
    assert e.value.retryable


def test_nth_request_fails_with_the_server_text(client: WebUIClient, control: Control) -> None:
    control.faults(fail_nth=[2])
    client.txt2img(small_txt2img())
    with pytest.raises(WebUIServerError) as e:
        client.txt2img(small_txt2img())
    assert not isinstance(e.value, WebUIOutOfMemory)
    assert e.value.status == 500
    assert "simulated failure of processing request 2" in str(e.value)
    assert e.value.retryable
    client.txt2img(small_txt2img())  # the 3rd is fine again


def test_out_of_memory(client: WebUIClient, control: Control) -> None:
    control.faults(oom_rate=1.0)
    with pytest.raises(WebUIOutOfMemory) as e:
        client.txt2img(small_txt2img())
    assert "CUDA out of memory" in str(e.value)
    assert json.loads(e.value.body)["error"] == "OutOfMemoryError"


def test_dropped_connection_is_unreachable(client: WebUIClient, control: Control) -> None:
    control.faults(drop_next=1)
    with pytest.raises(WebUIUnreachable, match="dropped"):
        client.txt2img(small_txt2img())
    assert client.txt2img(small_txt2img()).images


def test_validation_error_names_the_field(client: WebUIClient) -> None:
    with pytest.raises(WebUIRequestRejected) as e:
        client.txt2img(small_txt2img(steps="many"))
    assert e.value.status == 422
    assert e.value.field == "body.steps"
    assert "value is not a valid integer" in str(e.value)
    assert not e.value.retryable


def test_wrapped_rejections(client: WebUIClient) -> None:
    with pytest.raises(WebUIRequestRejected, match="Init image not found") as e:
        client.img2img({"prompt": "x"})
    assert e.value.status == 404
    with pytest.raises(WebUIRequestRejected, match="Script 'nope' not found"):
        client.txt2img(small_txt2img(script_name="nope"))
    with pytest.raises(WebUIServerError, match="model 'nope' not found"):
        client.set_options({"sd_model_checkpoint": "nope"})
    image = to_data_uri(client.txt2img(small_txt2img()).images[0])
    with pytest.raises(WebUIServerError, match="could not find upscaler named Bogus"):
        client.extra_single_image({"image": image, "upscaler_1": "Bogus"})


@pytest.fixture(scope="module")
def auth_sim() -> Iterator[SimServer]:
    timing = TimingConfig(seconds_per_step=0)
    config = SimConfig(port=0, api_auth=f"alice:{PASSWORD}", timing=timing)
    with SimServer(config) as server:
        yield server


def test_auth_accepts_the_right_password(auth_sim: SimServer) -> None:
    with WebUIClient(auth_sim.url, auth=("alice", PASSWORD)) as client:
        assert client.txt2img(small_txt2img()).images
        assert client.is_ready()


@pytest.mark.parametrize(
    ("auth", "detail"),
    [(None, "Not authenticated"), (("alice", "wrong"), "Incorrect username or password")],
)
def test_auth_rejections_are_wrapped_401s(
    auth_sim: SimServer, auth: tuple[str, str] | None, detail: str
) -> None:
    import requests

    raw = requests.get(
        f"{auth_sim.url}/sdapi/v1/options", auth=auth, timeout=5
    )  # what A1111 answers
    assert raw.status_code == 401
    assert "WWW-Authenticate" not in raw.headers
    assert raw.json() == {"error": "HTTPException", "detail": detail, "body": "", "errors": ""}
    with pytest.raises(WebUIAuthError) as e:
        WebUIClient(auth_sim.url, auth=auth).sd_models()
    assert not e.value.retryable
    # /loras is registered without auth in A1111
    assert requests.get(f"{auth_sim.url}/sdapi/v1/loras", timeout=5).status_code == 200


def test_reject_auth_fault_and_is_ready_raises(client: WebUIClient, control: Control) -> None:
    control.faults(reject_auth=True)
    with pytest.raises(WebUIAuthError):
        client.is_ready()


def test_password_never_in_errors_repr_or_logs(
    auth_sim: SimServer, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.DEBUG)
    client = WebUIClient(auth_sim.url, auth=("alice", PASSWORD), read_timeout=5)
    seen: list[WebUIError] = []
    client.sd_models()
    for bad in (small_txt2img(steps="many"), {"prompt": "x"}):
        try:
            client.img2img(bad)
        except WebUIError as e:
            seen.append(e)
    wrong = WebUIClient(auth_sim.url.replace("http://", f"http://alice:{PASSWORD}x@"))
    with pytest.raises(WebUIAuthError) as e:
        wrong.get_options()
    seen.append(e.value)
    texts = [str(x) + repr(x) + x.body + x.url for x in seen] + [repr(client), repr(wrong)]
    assert len(seen) == 3
    assert all(PASSWORD not in t for t in texts)
    assert PASSWORD not in caplog.text
    assert "Authorization" not in caplog.text


# -- Forge / SD.Next answer shapes (reference §11), from a tiny stub server -----------------


_FORGE_OOM = json.dumps(
    {"error": "OutOfMemoryError", "detail": "", "body": "", "message": "CUDA out of memory"}
)
_SDNEXT_500 = '{"error": "RuntimeError", "code": 500, "detail": "", "body": "", "errors": "boom"}'
_STUB_ROUTES: dict[tuple[str, str], tuple[int, str]] = {
    ("POST", "/sdapi/v1/interrupt"): (204, ""),
    ("POST", "/sdapi/v1/skip"): (204, ""),
    ("GET", "/sdapi/v1/sd-modules"): (200, '[{"model_name": "ae", "filename": "/m/ae.st"}]'),
    ("POST", "/sdapi/v1/txt2img"): (500, _FORGE_OOM),
    ("POST", "/sdapi/v1/img2img"): (400, '{"error": "Init image is none"}'),
    ("GET", "/sdapi/v1/options"): (500, _SDNEXT_500),
}


class _Stub(BaseHTTPRequestHandler):
    def _answer(self) -> None:
        status, body = _STUB_ROUTES.get((self.command, self.path), (404, '{"detail":"Not Found"}'))
        self.send_response(status)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body.encode())

    do_GET = do_POST = _answer

    def log_message(self, *args: object) -> None:
        pass


@pytest.fixture(scope="module")
def stub_url() -> Iterator[str]:
    server = ThreadingHTTPServer(("127.0.0.1", 0), _Stub)
    thread = threading.Thread(target=server.serve_forever, daemon=True)
    thread.start()
    yield f"http://127.0.0.1:{server.server_address[1]}"
    server.shutdown()
    server.server_close()
    thread.join(5)


def test_forge_and_sdnext_shapes(stub_url: str) -> None:
    client = WebUIClient(stub_url)
    assert client.interrupt() is None  # SD.Next: 204, no body
    assert client.skip() is None
    assert client.sd_vae() == [{"model_name": "ae", "filename": "/m/ae.st"}]  # Forge fallback
    with pytest.raises(WebUIOutOfMemory, match="CUDA out of memory"):  # Forge: "message"
        client.txt2img({"prompt": "x"})
    with pytest.raises(WebUIRequestRejected, match="Init image is none"):  # SD.Next 400
        client.img2img({"prompt": "x"})
    with pytest.raises(WebUIServerError, match="boom"):  # SD.Next: errors + code
        client.get_options()
