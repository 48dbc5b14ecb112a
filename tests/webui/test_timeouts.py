"""A generation call past the read timeout does not leave the WebUI working for nobody: the
client interrupts it and waits until ``/progress`` says idle before raising, so a retry does
not queue behind the hung job; connection failures say whether the request ever got there."""

from __future__ import annotations

import contextlib
import socket
import threading
import time

import pytest

from stablenew.errors import WebUITimeout, WebUIUnreachable
from stablenew.webui import WebUIClient
from stablenew.webui._errors import never_reached
from stablenew.webui.simulator import SimServer
from tests.webui.conftest import Control, small_txt2img


def _generated(control: Control) -> list[dict[str, object]]:
    return [e for e in control.stats()["events"] if e["images"]]


def test_timeout_interrupts_the_hung_job_before_raising(sim: SimServer, control: Control) -> None:
    control.faults(hang_seconds=30)
    with WebUIClient(sim.url, read_timeout=0.5) as client:
        started = time.monotonic()
        with pytest.raises(WebUITimeout, match="interrupted it, idle again") as caught:
            client.txt2img(small_txt2img())
        assert caught.value.retryable
        assert time.monotonic() - started < 5  # not the 30 s hang
        assert control.stats()["counters"]["interrupts"] >= 1
        assert not client.progress().busy
        assert _generated(control) == []  # the hung job made nothing for nobody
        # Nothing left holding the lock: the next call runs at once.
        control.faults(hang_seconds=0)
        started = time.monotonic()
        assert len(client.txt2img(small_txt2img()).images) == 1
        assert time.monotonic() - started < 2
    assert len(_generated(control)) == 1


def test_a_request_queued_behind_the_hung_job_is_stopped_too(
    sim: SimServer, control: Control
) -> None:
    # Another caller's job hangs holding the lock; ours queues behind it and times out. The
    # interrupt ends the hung one, ours then begins (A1111 clears the flag when a job begins)
    # and must be interrupted as well, or it would run for nobody.
    control.faults(hang_seconds=30)
    blocker_done = threading.Event()

    def blocker() -> None:
        # Interrupted: whatever it answers does not matter here.
        with WebUIClient(sim.url, read_timeout=60) as other, contextlib.suppress(Exception):
            other.txt2img(small_txt2img(prompt="blocker"))
        blocker_done.set()

    thread = threading.Thread(target=blocker, daemon=True)
    thread.start()
    deadline = time.monotonic() + 5
    while not control.stats()["busy"] and time.monotonic() < deadline:
        time.sleep(0.05)
    with WebUIClient(sim.url, read_timeout=0.5) as client:
        with pytest.raises(WebUITimeout):
            client.txt2img(small_txt2img(prompt="ours"))
        assert not client.progress().busy
    assert blocker_done.wait(5)
    thread.join(5)
    stats = control.stats()
    assert stats["counters"]["interrupts"] >= 2
    assert stats["queued"] == 0
    assert {e["prompt"] for e in stats["events"]} == {"blocker", "ours"}
    assert all(e["interrupted"] and not e["images"] for e in stats["events"])


def test_a_webui_that_will_not_stop_is_not_retried(
    sim: SimServer, control: Control, monkeypatch: pytest.MonkeyPatch
) -> None:
    control.faults(hang_seconds=30)
    with WebUIClient(sim.url, read_timeout=0.5, settle_timeout=1.0) as client:
        monkeypatch.setattr(client, "interrupt", lambda: None)  # a WebUI deaf to interrupts
        with pytest.raises(WebUITimeout, match="still busy") as caught:
            client.txt2img(small_txt2img())
        assert not caught.value.retryable  # a retry would only queue behind it


def test_refused_connection_never_reached_the_webui() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]  # closed again: nothing listens there
    client = WebUIClient(f"http://127.0.0.1:{port}", connect_timeout=1)
    with client, pytest.raises(WebUIUnreachable) as caught:
        client.txt2img(small_txt2img())
    assert never_reached(caught.value)


def test_dropped_answer_did_reach_the_webui(client: WebUIClient, control: Control) -> None:
    control.faults(drop_next=1)
    with pytest.raises(WebUIUnreachable) as caught:
        client.txt2img(small_txt2img())
    assert not never_reached(caught.value)
    assert len(_generated(control)) == 1
