"""One real stack for the orchestration tests: Prefect server (SQLite), WebUI simulator and a
``stablenew worker`` subprocess, all on 127.0.0.1 free ports, stopped at the end.

Tests share it (a fresh server costs ~15 s) and leave it clean: nothing active, pool resumed,
simulator reset.
"""

from __future__ import annotations

import asyncio
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew.orchestration.server.embedded import Stack
from stablenew.orchestration.services.jobs import JobService
from stablenew.records import NormalizedJobRecord, StageSpec


@dataclass
class LiveStack:
    stack: Stack
    prefect_url: str
    webui_url: str
    output_root: Path

    def sim(self, method: str, path: str, **json: Any) -> Any:
        resp = httpx.request(method, f"{self.webui_url}/stablenew-sim/v1/{path}", json=json or None)
        resp.raise_for_status()
        return resp.json()

    def stats(self) -> dict[str, Any]:
        return self.sim("GET", "stats")  # type: ignore[no-any-return]


@pytest.fixture(scope="session")
def live_stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveStack]:
    home = tmp_path_factory.mktemp("stablenew-home")
    output_root = home / "outputs"
    stack = Stack(home=home)
    try:
        stack.start(prefect=True, simulator=True, sim_args=["--seconds-per-image", "0.05"])
        assert stack.prefect_url
        assert stack.webui_url
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}):
            from stablenew.orchestration._prefect import prefect_client
            from stablenew.orchestration.services.deployments import apply

            async def deploy() -> None:
                async with prefect_client() as client:
                    await apply(client)

            asyncio.run(deploy())
            stack.start_worker(
                extra_env={"STABLENEW_OUTPUT_ROOT": str(output_root)},
            )
            live = LiveStack(stack, stack.prefect_url, stack.webui_url, output_root)
            # One job end to end first, so tests measure behaviour, not a cold worker.
            warm = make_record("warm-up", pack_id="warmup")
            service = JobService()
            service.submit([warm])
            wait_for(
                lambda: service.status(warm.job_id).status.is_terminal,
                timeout=120,
                what="the warm-up job",
            )
            yield live
    finally:
        stack.stop()


@pytest.fixture
def live(live_stack: LiveStack) -> Iterator[LiveStack]:
    """The shared stack, with Prefect pointed at it and everything clean afterwards."""
    with temporary_settings(updates={PREFECT_API_URL: live_stack.prefect_url}):
        live_stack.sim("POST", "reset")
        yield live_stack
        service = JobService()
        # Cancel first: a paused test's leftovers must not start once the pool resumes.
        service.cancel_pack("itest")
        service.resume()
        live_stack.sim("POST", "reset")


def make_record(prompt: str, *, steps: int = 4, size: int = 64, **over: Any) -> NormalizedJobRecord:
    fields: dict[str, Any] = {
        "pack_id": "itest",
        "pack_hash": "0" * 16,
        "row_index": 0,
        "prompt": prompt,
        "seed": 7,
        "model": "v1-5-pruned-emaonly",
        "sampler": "Euler a",
        "steps": steps,
        "cfg_scale": 7.0,
        "width": size,
        "height": size,
        "stages": [
            StageSpec(
                type="txt2img",
                sampler="Euler a",
                steps=steps,
                cfg_scale=7.0,
                width=size,
                height=size,
            )
        ],
    }
    fields.update(over)
    return NormalizedJobRecord(**fields)


def wait_for(
    check: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.2, what: str = ""
) -> Any:
    """Poll until ``check`` returns something truthy; bounded."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        value = check()
        if value:
            return value
        time.sleep(interval)
    raise AssertionError(f"timed out after {timeout}s waiting for {what or check}")
