"""The two ways a render run is driven end the same: the ``stablenew`` worker proposes the
run's states itself (``orchestration/worker/direct_run.py``), any other worker runs the
``render-job`` flow through Prefect's engine. Both on the real server and simulator."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from pathlib import Path
from typing import Any
from uuid import UUID

import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    LogFilter,
    LogFilterFlowRunId,
)

from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services.jobs import JobService
from stablenew.settings import get_settings
from tests.orchestration.conftest import LiveStack, make_record, wait_for

pytestmark = pytest.mark.slow


async def _logs_and_artifacts(run_id: UUID) -> tuple[list[str], list[Any]]:
    async with prefect_client() as client:
        logs = await client.read_logs(
            log_filter=LogFilter(flow_run_id=LogFilterFlowRunId(any_=[run_id]))
        )
        artifacts = await client.read_artifacts(
            artifact_filter=ArtifactFilter(flow_run_id=ArtifactFilterFlowRunId(any_=[run_id]))
        )
    return [log.message for log in logs], artifacts


def _engine_lines(messages: list[str]) -> None:
    assert any(m.startswith("Beginning flow run") for m in messages), messages
    assert "Finished in state Completed()" in messages, messages
    assert any("wrote 1 image(s)" in m for m in messages), messages


def _one_run_artifact(artifacts: list[Any], job_id: str) -> None:
    """The run's own markdown artifact (a version of the pack's keyed one may be linked too)."""
    own = [a for a in artifacts if a.key is None]
    assert [a.type for a in own] == ["markdown"], artifacts
    assert job_id in (own[0].description or "")


def test_a_run_the_worker_drives_shows_what_the_engine_would(live: LiveStack) -> None:
    service = JobService()
    rec = make_record("driven by the worker")
    service.submit([rec])
    wait_for(lambda: service.status(rec.job_id).status.is_terminal, what="the job")
    ref = service.status(rec.job_id)
    assert ref.status is JobStatus.COMPLETED
    assert ref.flow_run_id is not None
    # Logs reach the server in batches: wait for the last line.
    messages = wait_for(
        lambda: (
            (m := asyncio.run(_logs_and_artifacts(ref.flow_run_id))[0])
            and "Finished in state Completed()" in m
            and m
        ),
        timeout=15,
        what="the run's last log line",
    )
    _engine_lines(messages)
    _one_run_artifact(asyncio.run(_logs_and_artifacts(ref.flow_run_id))[1], rec.job_id)

    async def attempt() -> int:
        async with prefect_client() as client:
            return (await client.read_flow_run(ref.flow_run_id)).run_count

    assert asyncio.run(attempt()) == 1


@pytest.fixture
def as_another_worker(
    live: LiveStack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> Iterator[Path]:
    """This process, set up as a worker's process would be (its WebUI, its output root)."""
    monkeypatch.setenv("STABLENEW_WEBUI__URL", live.webui_url)
    monkeypatch.setenv("STABLENEW_OUTPUT_ROOT", str(tmp_path))
    get_settings.cache_clear()
    yield tmp_path
    from prefect.logging.handlers import APILogHandler

    asyncio.run(APILogHandler.aflush())  # this process's run logs, while the server still answers
    get_settings.cache_clear()


def test_the_flow_under_prefects_engine_renders_the_same_job(as_another_worker: Path) -> None:
    from flows.render import render_job

    rec = make_record("driven by the engine", pack_id="engine-flow")
    state = asyncio.run(render_job(rec, return_state=True))  # type: ignore[call-overload]
    assert state.is_completed(), state
    outputs = state.result()
    assert len(outputs) == 1
    image = Path(outputs[0]["path"])
    assert image.is_file()
    assert image.is_relative_to(as_another_worker)
    run_id = state.state_details.flow_run_id
    messages, artifacts = wait_for(
        lambda: (
            (got := asyncio.run(_logs_and_artifacts(run_id)))
            and "Finished in state Completed()" in got[0]
            and got
        ),
        timeout=15,
        what="the flow's last log line",
    )
    _engine_lines(messages)
    _one_run_artifact(artifacts, rec.job_id)


def test_a_failed_run_the_worker_drives_is_worded_as_the_engine_words_it(
    live: LiveStack,
) -> None:
    service = JobService()
    rec = make_record("rejected by the WebUI")
    live.sim("POST", "faults", reject_next=1)
    service.submit([rec])
    wait_for(lambda: service.status(rec.job_id).status.is_terminal, what="the job")
    ref = service.status(rec.job_id)
    assert ref.status is JobStatus.FAILED
    assert ref.flow_run_id is not None

    async def state_message() -> str | None:
        async with prefect_client() as client:
            run = await client.read_flow_run(ref.flow_run_id)
        return run.state.message if run.state else None

    message = asyncio.run(state_message())
    assert message is not None
    assert message.startswith("Flow run encountered an exception: WebUI"), message
    messages = wait_for(
        lambda: (
            (m := asyncio.run(_logs_and_artifacts(ref.flow_run_id))[0])
            and any(x.startswith("Finished in state Failed(") for x in m)
            and m
        ),
        timeout=15,
        what="the run's last log line",
    )
    assert any(m.startswith("Encountered exception during execution") for m in messages)
