"""The render loop without Prefect, against an in-process simulator: a WebUI that is away is
waited for without using up the job's retries (bounded by ``webui.outage_timeout``, cancellable),
job faults are retried with backoff, and every wait and retry is told."""

from __future__ import annotations

import threading
import time

import pytest

from stablenew.errors import WebUIInterrupted, WebUIServerError, WebUIUnreachable
from stablenew.orchestration.server.embedded import free_port
from stablenew.orchestration.worker import render
from stablenew.orchestration.worker.render import OutageClock, render_with_retries, wait_for_webui
from stablenew.webui.simulator import SimConfig, SimServer, TimingConfig
from tests.webui.conftest import Control, make_record


class Notes:
    def __init__(self) -> None:
        self.told: list[tuple[str, str]] = []

    def waiting(self, reason: str) -> None:
        self.told.append(("waiting", reason))

    def resumed(self, message: str) -> None:
        self.told.append(("resumed", message))

    def retrying(self, message: str) -> None:
        self.told.append(("retrying", message))

    def kinds(self) -> list[str]:
        return [k for k, _ in self.told]


@pytest.fixture
def port(monkeypatch: pytest.MonkeyPatch) -> int:
    """A free loopback port the worker's settings point at (nothing listens yet)."""
    chosen = free_port()
    monkeypatch.setenv("STABLENEW_WEBUI__URL", f"http://127.0.0.1:{chosen}")
    monkeypatch.setenv("STABLENEW_WEBUI__CONNECT_TIMEOUT", "1")
    monkeypatch.setattr(render, "OUTAGE_POLL_SECONDS", 0.1)
    monkeypatch.setattr(render, "RETRY_DELAYS", [0.05, 0.05, 0.05])
    return chosen


def _sim(port: int) -> SimServer:
    return SimServer(SimConfig(port=port, seed=7, timing=TimingConfig(seconds_per_step=0.0005)))


def _start_later(server: SimServer, delay: float) -> threading.Thread:
    thread = threading.Thread(target=lambda: (time.sleep(delay), server.start()), daemon=True)
    thread.start()
    return thread


def test_a_webui_that_is_away_is_waited_for_without_using_retries(port: int) -> None:
    notes = Notes()
    server = _sim(port)
    starter = _start_later(server, 1.0)
    try:
        images = render_with_retries(
            make_record(), None, threading.Event(), clock=OutageClock(30), notes=notes
        )
        starter.join(5)
        assert len(images) == 1
        assert notes.kinds() == ["waiting", "resumed"]  # no retry used
        assert f"http://127.0.0.1:{port}" in notes.told[0][1]
        assert Control(server.url).stats()["counters"]["requests"] == 1
    finally:
        starter.join(5)
        server.stop()


def test_preflight_waits_for_the_webui_too(port: int) -> None:
    notes = Notes()
    server = _sim(port)
    starter = _start_later(server, 1.0)
    try:
        url = wait_for_webui(make_record(), threading.Event(), clock=OutageClock(30), notes=notes)
        assert url == f"http://127.0.0.1:{port}"
        assert notes.kinds() == ["waiting", "resumed"]
    finally:
        starter.join(5)
        server.stop()


def test_the_wait_is_bounded_by_the_outage_budget(port: int) -> None:
    notes = Notes()
    started = time.monotonic()
    with pytest.raises(WebUIUnreachable, match="outage_timeout") as caught:
        render_with_retries(
            make_record(), None, threading.Event(), clock=OutageClock(0.5), notes=notes
        )
    assert not caught.value.retryable
    assert time.monotonic() - started < 5
    assert notes.kinds() == ["waiting"]


def test_the_wait_ends_when_the_run_is_cancelled(port: int) -> None:
    cancel = threading.Event()
    threading.Timer(0.3, cancel.set).start()
    with pytest.raises(WebUIInterrupted, match="cancelled"):
        render_with_retries(make_record(), None, cancel, clock=OutageClock(30), notes=Notes())


def test_job_faults_are_retried_then_give_up(port: int) -> None:
    with _sim(port) as server:
        control = Control(server.url)
        control.faults(fail_next=1)
        notes = Notes()
        clock = OutageClock(30)
        assert (
            len(
                render_with_retries(
                    make_record(), None, threading.Event(), clock=clock, notes=notes
                )
            )
            == 1
        )
        assert notes.kinds() == ["retrying"]
        control.faults(fail_next=10)
        notes = Notes()
        with pytest.raises(WebUIServerError):
            render_with_retries(make_record(), None, threading.Event(), clock=clock, notes=notes)
        assert notes.kinds() == ["retrying"] * 3  # 4 attempts in all
