"""A worker waits out a Prefect API outage instead of exiting, once it has reached the API.

Prefect's service loops end a worker after a few failed polls in a row (each one already
retried for about a minute by Prefect's client), so a server down for longer than a few
minutes would end every worker. The stack-level case (server killed and restarted with a
queue) is in test_worker_faults.py; these are the rules, without a server.
"""

from __future__ import annotations

import asyncio
import logging
import os
import subprocess
import sys
import time
from pathlib import Path

import anyio
import httpx
import pytest

from stablenew.orchestration._prefect import api_unavailable
from stablenew.orchestration.server.embedded import free_port
from stablenew.orchestration.worker.gpu_worker import StableNewWorker
from stablenew.orchestration.worker.outage import steadily

REQUEST = httpx.Request("GET", "http://127.0.0.1:9/api/work_pools/p")


def _status(code: int) -> httpx.HTTPStatusError:
    return httpx.HTTPStatusError("x", request=REQUEST, response=httpx.Response(code))


async def _failing(exc: Exception) -> list[str]:
    raise exc


async def _answering() -> list[str]:
    return ["run"]


def test_outages_are_told_from_wrong_requests() -> None:
    assert api_unavailable(httpx.ConnectError("refused", request=REQUEST))
    assert api_unavailable(httpx.ReadTimeout("slow", request=REQUEST))
    assert api_unavailable(_status(503))
    assert not api_unavailable(_status(404))
    assert not api_unavailable(ValueError("bad"))


def test_a_worker_waits_out_an_outage_once_it_has_reached_the_api(
    caplog: pytest.LogCaptureFixture,
) -> None:
    worker = StableNewWorker(work_pool_name="p", name="outage")
    down = httpx.ConnectError("All connection attempts failed", request=REQUEST)

    async def scenario() -> None:
        # Never reached: a wrong URL, not an outage. It fails as before.
        with pytest.raises(httpx.ConnectError):
            await worker.outage.through(lambda: _failing(down), [])
        assert await worker.outage.through(_answering, []) == ["run"]
        with caplog.at_level(logging.INFO):
            for _ in range(5):  # as many failed polls as it takes: no exit
                assert await worker.outage.through(lambda: _failing(down), []) == []
                assert await worker.outage.through(lambda: _failing(_status(503)), []) == []
            # A request the API refuses is still an error, outage or not.
            with pytest.raises(httpx.HTTPStatusError):
                await worker.outage.through(lambda: _failing(_status(422)), [])
            assert await worker.outage.through(_answering, []) == ["run"]
        messages = [r.getMessage() for r in caplog.records]
        assert sum("Prefect API unreachable" in m for m in messages) == 1, messages
        assert sum("Prefect API back after" in m for m in messages) == 1, messages

    asyncio.run(scenario())
    # The outage may have left a run of its own unended: it looks for such runs next.
    assert worker.outage.lost_touch


def test_a_call_left_unanswered_counts_as_an_outage_and_is_asked_afresh(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Prefect's client sleeps up to a minute and more between tries at an unreachable API:
    a poll gives up after its patience (the next poll asks anew), and a state write is
    asked again, so the worker notices the API's return within seconds."""
    worker = StableNewWorker(work_pool_name="p", name="patience")
    tries: list[float] = []

    async def sleeping_then_answering() -> list[str]:
        tries.append(time.monotonic())
        if len(tries) < 3:
            await anyio.sleep(60)  # a try asleep in the client's back-off
        return ["run"]

    async def scenario() -> None:
        assert await worker.outage.through(_answering, []) == ["run"]
        with caplog.at_level(logging.INFO):
            assert await worker.outage.through(sleeping_then_answering, [], patience=0.2) == []
            assert worker.outage.ongoing
            started = time.monotonic()
            assert await steadily(sleeping_then_answering, patience=0.2) == ["run"]
            assert time.monotonic() - started < 2
        messages = [r.getMessage() for r in caplog.records]
        assert any("no answer in 0.2s" in m for m in messages), messages

    asyncio.run(scenario())
    assert len(tries) == 3


def test_flushing_to_an_unreachable_api_gives_up_in_time(tmp_path: Path) -> None:
    """What a process leaves queued for the API (here an event) must not keep it from
    exiting: Prefect's own drain at exit has no time limit."""
    code = """
import os, time
from prefect.events import emit_event
from stablenew.orchestration._prefect import flush_to_prefect
emit_event(event="stablenew.test", resource={"prefect.resource.id": "stablenew.test"})
started = time.monotonic()
sent = flush_to_prefect(1.0)
print(sent, round(time.monotonic() - started, 1), flush=True)
os._exit(0)
"""
    env = {
        **os.environ,
        "PREFECT_API_URL": f"http://127.0.0.1:{free_port()}/api",
        "STABLENEW_HOME": str(tmp_path),
    }
    done = subprocess.run(
        [sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60
    )
    sent, took = done.stdout.split()
    assert sent == "False", done.stderr[-2000:]
    assert float(took) < 3
