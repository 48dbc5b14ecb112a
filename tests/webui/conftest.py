"""Fixtures: one simulator per session on 127.0.0.1 and a free port, reset before every test."""

from __future__ import annotations

import time
from collections.abc import Iterator
from typing import Any

import pytest
import requests

from stablenew.records import NormalizedJobRecord
from stablenew.webui import WebUIClient
from stablenew.webui.simulator import SimConfig, SimServer, TimingConfig


class Control:
    """The simulator's ``/stablenew-sim/v1`` API."""

    def __init__(self, url: str) -> None:
        self.base = f"{url}/stablenew-sim/v1"

    def faults(self, **changes: Any) -> dict[str, Any]:
        return self._post("faults", changes)

    def timing(self, **changes: Any) -> dict[str, Any]:
        return self._post("timing", changes)

    def reset(self) -> None:
        self._post("reset", {})

    def clean_slate(self) -> None:
        """Reset, let a job the reset woke finish (bounded), and reset again: a hung job
        from the test before would otherwise end, with its event, inside the next test."""
        self.reset()
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline:
            stats = self.stats()
            if not stats["busy"] and not stats.get("queued"):
                break
            time.sleep(0.02)
        self.reset()

    def stats(self) -> dict[str, Any]:
        r = requests.get(f"{self.base}/stats", timeout=5)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data

    def _post(self, name: str, body: dict[str, Any]) -> dict[str, Any]:
        r = requests.post(f"{self.base}/{name}", json=body, timeout=5)
        r.raise_for_status()
        data: dict[str, Any] = r.json()
        return data


@pytest.fixture(scope="session")
def sim() -> Iterator[SimServer]:
    config = SimConfig(port=0, seed=7, timing=TimingConfig(seconds_per_step=0.0005))
    with SimServer(config) as server:
        yield server


@pytest.fixture
def control(sim: SimServer) -> Iterator[Control]:
    ctl = Control(sim.url)
    ctl.clean_slate()
    yield ctl
    ctl.clean_slate()


@pytest.fixture
def client(sim: SimServer, control: Control) -> Iterator[WebUIClient]:
    with WebUIClient(sim.url, connect_timeout=2.0, read_timeout=20.0) as c:
        yield c


def make_record(**over: Any) -> NormalizedJobRecord:
    stages = over.pop(
        "stages",
        [
            {
                "type": "txt2img",
                "sampler": "Euler a",
                "steps": 6,
                "cfg_scale": 7.0,
                "width": 64,
                "height": 64,
            }
        ],
    )
    fields: dict[str, Any] = {
        "pack_id": "demo",
        "pack_hash": "0123456789abcdef",
        "row_index": 0,
        "prompt": "a red fox in snow",
        "negative_prompt": "blurry",
        "seed": 1234,
        "model": "v1-5-pruned-emaonly",
        "sampler": "Euler a",
        "steps": 6,
        "cfg_scale": 7.0,
        "width": 64,
        "height": 64,
        "stages": stages,
    }
    fields.update(over)
    return NormalizedJobRecord(**fields)


def small_txt2img(**over: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "prompt": "a red fox in snow",
        "negative_prompt": "blurry",
        "seed": 1234,
        "steps": 5,
        "sampler_name": "DPM++ 2M",
        "cfg_scale": 7,
        "width": 64,
        "height": 64,
    }
    body.update(over)
    return body
