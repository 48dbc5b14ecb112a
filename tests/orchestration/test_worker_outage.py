"""A worker waits out a Prefect API outage instead of exiting, once it has reached the API.

Prefect's service loops end a worker after a few failed polls in a row (each one already
retried for about a minute by Prefect's client), so a server down for longer than a few
minutes would end every worker. The stack-level case (server killed and restarted with a
queue) is in test_worker_faults.py; these are the rules, without a server.
"""

from __future__ import annotations

import asyncio
import logging

import httpx
import pytest

from stablenew.orchestration.worker.gpu_worker import StableNewWorker
from stablenew.orchestration.worker.outage import api_unavailable

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
