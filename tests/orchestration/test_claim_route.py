"""The embedded server's claim, start, look, changes and finish routes (``orchestration.server.
claim_route``, ``look_route``, ``changes_route``, ``finish_route``) against Prefect's own
requests: a claim against ``get_scheduled_flow_runs``, a proposed PENDING and the worker's
labels; a start against a proposed RUNNING; a look against the run filter, the due count per
queue and the pool read a worker would send instead; changes against reading the runs; a
finish against creating the artifact, then proposing the final state.

On a server of its own with no worker, so nothing else claims: the runs, their states and
their ``prefect.flow-run.Pending`` events must match what Prefect's requests make, field for
field apart from what is unique to each run; claims at the same time never share a run; and
a run starts only while it is still the caller's claim.
A Prefect upgrade that changes the models the route calls fails here.
"""

from __future__ import annotations

import asyncio
import tempfile
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterNextScheduledStartTime,
    FlowRunFilterState,
    FlowRunFilterStateType,
    WorkPoolFilter,
    WorkPoolFilterName,
    WorkQueueFilter,
    WorkQueueFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Cancelling, Pending, Running, Scheduled

from stablenew.orchestration._prefect import prefect_client, read_runs_by_id
from stablenew.orchestration.server.embedded import Stack
from stablenew.orchestration.services.deployments import apply
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.monitor import read_changes
from stablenew.orchestration.worker.cancel_watch import read_left
from stablenew.orchestration.worker.scheduled_runs import (
    CLAIM_ROUTE,
    LOOK_ROUTE,
    START_ROUTE,
    ScheduledRuns,
)
from tests.orchestration.conftest import make_record
from tests.orchestration.test_cancel_pack import _comparable, _events

pytestmark = pytest.mark.slow

POOL = "stablenew-claims"
LABELS = {"prefect.worker.name": "claimer", "prefect.worker.type": "stablenew"}


@pytest.fixture(scope="module")
def server() -> Iterator[str]:
    """A Prefect server of ours with the project deployed to POOL and no worker."""
    stack = Stack(home=Path(tempfile.mkdtemp(prefix="stablenew-claims-")))
    try:
        stack.start(prefect=True, simulator=False)
        assert stack.prefect_url
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}):

            async def deploy() -> None:
                async with prefect_client() as client:
                    await apply(client, gpu_pool=POOL)

            asyncio.run(deploy())
            yield stack.prefect_url
    finally:
        stack.stop()


@pytest.fixture
def service(server: str) -> Iterator[JobService]:
    """Nothing queued before or after each test."""
    with temporary_settings(updates={PREFECT_API_URL: server}):
        jobs = JobService(pool=POOL)
        yield jobs
        jobs.cancel_pack("itest")
        jobs.resume()


def _submit(service: JobService, n: int, priority: str = "normal") -> list[FlowRun]:
    token = uuid.uuid4().hex[:8]
    records = [make_record(f"claim {token} {priority} {i}") for i in range(n)]
    return asyncio.run(service.asubmit_runs(records, priority=priority))


async def _claim(client: PrefectClient, **body: Any) -> list[WorkerFlowRunResponse]:
    body = {"message": "Claimed by claimer", "labels": LABELS, **body}
    response = await client.request(
        "POST",
        CLAIM_ROUTE,  # type: ignore[arg-type]
        path_params={"name": POOL},
        json=body,
    )
    return WorkerFlowRunResponse.model_validate_list(response.json())


def test_the_route_claims_as_prefects_own_requests(service: JobService) -> None:
    runs = _submit(service, 2)

    async def go() -> None:
        async with prefect_client() as client:
            # Prefect's way, as a worker takes a run: ask, claim, label.
            response = await client.request(
                "POST",
                "/work_pools/{name}/get_scheduled_flow_runs",
                path_params={"name": POOL},
                json={"limit": 1},
            )
            theirs = WorkerFlowRunResponse.model_validate_list(response.json())[0]
            await client.set_flow_run_state(
                theirs.flow_run.id, Pending(message="Claimed by claimer")
            )
            await client.update_flow_run_labels(theirs.flow_run.id, LABELS)
            # Ours: one request.
            [ours] = await _claim(client, limit=1)
            assert [theirs.flow_run.id, ours.flow_run.id] == [r.id for r in runs]
            assert (ours.work_pool_id, ours.work_queue_id) == (
                theirs.work_pool_id,
                theirs.work_queue_id,
            )

            read = {r.id: r for r in await read_runs_by_id(client, [r.id for r in runs])}
            a, b = read[theirs.flow_run.id], read[ours.flow_run.id]
            assert b.state_type == StateType.PENDING
            assert _comparable(b) == _comparable(a)
            # What the answer says is what the server now holds.
            assert ours.flow_run.state_id == b.state_id
            assert ours.flow_run.labels == b.labels
            states = [await client.read_flow_run_states(r.id) for r in (a, b)]
            assert [s.type for s in states[1]] == [s.type for s in states[0]]
            events = [(await _events(client, r.id, "prefect.flow-run.Pending"))[0] for r in (a, b)]
            assert events[1]["id"] == str(b.state_id)
            same = {"event", "payload"}
            assert {k: events[1][k] for k in same} == {k: events[0][k] for k in same}
            related = [sorted(r["prefect.resource.role"] for r in e["related"]) for e in events]
            assert related[1] == related[0]

    asyncio.run(go())


def test_it_claims_by_priority_and_leaves_what_it_should(service: JobService) -> None:
    low = _submit(service, 1, "low")[0]
    normal = _submit(service, 2, "normal")
    urgent = _submit(service, 1, "urgent")[0]

    async def go() -> None:
        async with prefect_client() as client:
            assert await _claim(client, limit=0) == []  # claims nothing
            # The best first (queue priority, then time), past what the caller still holds.
            got = await _claim(client, limit=2, exclude=[str(urgent.id)])
            assert [r.flow_run.id for r in got] == [r.id for r in normal]
            # Only the queues named.
            assert await _claim(client, limit=3, work_queue_names=["high", "normal"]) == []
            # A paused pool hands out nothing, as Prefect's own ask.
            await service.aset_paused(True)
            assert await _claim(client, limit=3) == []
            await service.aset_paused(False)
            got = await _claim(client, limit=3)
            assert [r.flow_run.id for r in got] == [urgent.id, low.id]
            with pytest.raises(httpx.HTTPStatusError) as refused:
                await _claim(client, limit=1, work_queue_names=["nonesuch"])
            assert refused.value.response.status_code == 404
            assert "nonesuch" in refused.value.response.text

    asyncio.run(go())


def test_claims_at_the_same_time_never_share_a_run(service: JobService) -> None:
    runs = _submit(service, 40)

    async def one_claimer(name: str) -> list[uuid.UUID]:
        async with prefect_client() as client:
            got: list[uuid.UUID] = []
            for _ in range(3):
                got += [r.flow_run.id for r in await _claim(client, limit=5, message=name)]
            return got

    async def go() -> list[list[uuid.UUID]]:
        return await asyncio.gather(*(one_claimer(f"Claimed by c{i}") for i in range(4)))

    claimed = asyncio.run(go())
    every = [run_id for got in claimed for run_id in got]
    assert len(every) == len(set(every)) == 40
    assert set(every) == {r.id for r in runs}

    async def holders() -> dict[uuid.UUID, str | None]:
        async with prefect_client() as client:
            read = await read_runs_by_id(client, every)
            return {r.id: r.state.message if r.state else None for r in read}

    held = asyncio.run(holders())
    for i, got in enumerate(claimed):
        assert {held[run_id] for run_id in got} <= {f"Claimed by c{i}"}


async def _start(client: PrefectClient, run_id: uuid.UUID, claim: str) -> FlowRun:
    response = await client.request(
        "POST",
        START_ROUTE,  # type: ignore[arg-type]
        path_params={"id": run_id},
        json={"claim_message": claim},
    )
    return FlowRun.model_validate(response.json())


def test_a_run_starts_as_prefects_own_running_and_only_while_it_is_the_callers_claim(
    service: JobService,
) -> None:
    _submit(service, 4)
    claim = "Claimed by claimer"

    async def go() -> None:
        async with prefect_client() as client:
            theirs, ours, not_mine, cancelled = [r.flow_run for r in await _claim(client, limit=4)]
            await client.set_flow_run_state(theirs.id, Running())
            started = await _start(client, ours.id, claim)
            assert started.state_type == StateType.RUNNING
            read = {r.id: r for r in await read_runs_by_id(client, [theirs.id, ours.id])}
            a, b = read[theirs.id], read[ours.id]
            assert _comparable(b) == _comparable(a)
            # The answer is the run as the server now holds it, field for field.
            volatile = {"estimated_run_time", "estimated_start_time_delta"}
            assert started.model_dump(exclude=volatile) == b.model_dump(exclude=volatile)
            states = [await client.read_flow_run_states(r.id) for r in (a, b)]
            assert [s.type for s in states[1]] == [s.type for s in states[0]]
            events = [(await _events(client, r.id, "prefect.flow-run.Running"))[0] for r in (a, b)]
            assert events[1]["id"] == str(b.state_id)
            same = {"event", "payload"}
            assert {k: events[1][k] for k in same} == {k: events[0][k] for k in same}

            # Started already: the answer is the run, unchanged.
            again = await _start(client, ours.id, claim)
            assert (again.state_type, again.state_id) == (StateType.RUNNING, b.state_id)
            # Another worker's claim (here: put back and claimed elsewhere) is not started.
            other = await _start(client, not_mine.id, "Claimed by someone-else")
            assert other.state_type == StateType.PENDING
            assert other.state
            assert other.state.message == claim
            # Nor is a run being cancelled: the answer says so.
            await client.set_flow_run_state(cancelled.id, Cancelling(message="cancel requested"))
            refused = await _start(client, cancelled.id, claim)
            assert refused.state_type == StateType.CANCELLING
            with pytest.raises(httpx.HTTPStatusError) as missing:
                await _start(client, uuid.uuid4(), claim)
            assert missing.value.response.status_code == 404

    asyncio.run(go())


async def _look(client: PrefectClient, ids: list[uuid.UUID], pool: str = POOL) -> dict[str, Any]:
    response = await client.request(
        "POST",
        LOOK_ROUTE,  # type: ignore[arg-type]
        path_params={"name": pool},
        json={"flow_run_ids": [str(i) for i in ids]},
    )
    body: dict[str, Any] = response.json()
    return body


def test_a_look_answers_what_prefects_own_reads_answer(service: JobService) -> None:
    normal = _submit(service, 3, "normal")
    _submit(service, 2, "high")
    volatile = {"estimated_run_time", "estimated_start_time_delta", "updated"}

    async def go() -> None:
        async with prefect_client() as client:
            # Scheduled for later: not due, and not counted.
            later = await client.create_flow_run_from_deployment(
                normal[0].deployment_id,  # type: ignore[arg-type]
                state=Scheduled(scheduled_time=datetime.now(UTC) + timedelta(hours=1)),
                work_queue_name="normal",
            )
            try:
                held = [r.flow_run for r in await _claim(client, limit=2)]  # the two high
                await client.set_flow_run_state(held[1].id, Cancelling(message="cancel"))
                ids = [h.id for h in held] + [normal[0].id, later.id]
                body = await _look(client, ids)

                # The runs: as the worker's own filter read answers (PENDING and RUNNING
                # left out), and as ScheduledRuns.look hands them to the cancel watch.
                read = await read_left(client, ids)
                assert sorted(r.id for r in read) == sorted([held[1].id, normal[0].id, later.id])
                looked = await ScheduledRuns(lambda: client, POOL, set).look(ids)
                assert looked is not None
                assert [str(r.id) for r in looked] == [r["id"] for r in body["changed"]]
                ours = {r.id: r for r in looked}
                for run in read:
                    assert ours[run.id].model_dump(exclude=volatile) == run.model_dump(
                        exclude=volatile
                    )

                # Due per queue: Prefect's count of the runs due now in that queue.
                assert set(body["due"]) == {"urgent", "high", "normal", "low", "default"}
                for name, due in body["due"].items():
                    counted = await client.count_flow_runs(
                        flow_run_filter=FlowRunFilter(
                            state=FlowRunFilterState(
                                type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])
                            ),
                            next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                                before_=datetime.now(UTC)
                            ),
                        ),
                        work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[POOL])),
                        work_queue_filter=WorkQueueFilter(name=WorkQueueFilterName(any_=[name])),
                    )
                    assert due == counted, name
                assert (body["due"]["normal"], body["due"]["high"]) == (3, 0)

                assert body["is_paused"] is False
                await service.aset_paused(True)
                assert (await _look(client, []))["is_paused"] is True
                await service.aset_paused(False)
                with pytest.raises(httpx.HTTPStatusError) as missing:
                    await _look(client, ids, pool="nonesuch")
                assert missing.value.response.status_code == 404
                assert "nonesuch" in missing.value.response.text
            finally:
                await client.delete_flow_run(later.id)

    asyncio.run(go())


def test_changes_answers_only_the_runs_whose_state_changed(service: JobService) -> None:
    runs = _submit(service, 3)

    async def go() -> None:
        async with prefect_client() as client:
            seen = {r.id: r.state_id for r in runs}
            assert await read_changes(client, seen) == []
            await client.set_flow_run_state(runs[1].id, Cancelling(message="cancel"))
            missing = uuid.uuid4()
            changes = await read_changes(client, {**seen, runs[2].id: None, missing: None})
            assert changes is not None
            assert sorted(c.id for c in changes) == sorted([runs[1].id, runs[2].id])
            for change in changes:
                run = await client.read_flow_run(change.id)
                assert run.state
                assert (
                    change.state_id,
                    change.state_type,
                    change.state_name,
                    change.state_message,
                    change.work_queue_name,
                    change.expected_start_time,
                ) == (
                    run.state_id,
                    run.state.type.value,
                    run.state.name,
                    run.state.message,
                    run.work_queue_name,
                    run.expected_start_time,
                )

    asyncio.run(go())


async def _artifacts_of(client: PrefectClient, run_id: uuid.UUID) -> list[tuple[Any, ...]]:
    response = await client.request(
        "POST", "/artifacts/filter", json={"artifacts": {"flow_run_id": {"any_": [str(run_id)]}}}
    )
    return [(a["type"], a["data"], a["description"], a["key"]) for a in response.json()]


async def _artifact_event(client: PrefectClient, artifact_id: str) -> dict[str, Any]:
    body = {
        "filter": {
            "event": {"name": ["prefect.artifact.created"]},
            "resource": {"id": [f"prefect.artifact.{artifact_id}"]},
        },
        "limit": 5,
    }
    for _ in range(150):  # the event persister writes in batches, every few seconds
        events = (await client.request("POST", "/events/filter", json=body)).json()["events"]
        if events:
            assert len(events) == 1
            return dict(events[0])
        await asyncio.sleep(0.2)
    raise AssertionError(f"no prefect.artifact.created event for artifact {artifact_id}")


@pytest.mark.parametrize("route", ["finish route", "Prefect's requests"])
def test_a_finish_writes_the_state_as_prefects_own_with_the_artifact(
    service: JobService, monkeypatch: pytest.MonkeyPatch, route: str
) -> None:
    """The final state and the run's artifact in one request (``server/finish_route.py``),
    against creating the artifact, then proposing COMPLETED; a refused state brings no
    artifact: a finish sent again after its answer was lost adds none."""
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.client.schemas.responses import SetStateStatus
    from prefect.states import Completed

    from stablenew.orchestration.worker import scheduled_runs

    if route != "finish route":
        monkeypatch.setattr(scheduled_runs, "FINISH_ROUTE", "/stablenew/absent/finish")
    _submit(service, 3)

    def artifact(run_id: uuid.UUID) -> ArtifactCreate:
        return ArtifactCreate(
            type="markdown",
            data="### outputs\n\n`a.png`",
            description="Outputs",
            flow_run_id=run_id,
        )

    async def go() -> None:
        async with prefect_client() as client:
            runs = [r.flow_run for r in await _claim(client, limit=3)]
            for run in runs:
                await client.set_flow_run_state(run.id, Running())
            theirs, ours, other = runs
            await client.create_artifact(artifact(theirs.id))
            await client.set_flow_run_state(theirs.id, Completed())
            scheduled = ScheduledRuns(lambda: client, POOL, set)
            sent = [artifact(ours.id)]
            result = await scheduled.finish(ours.id, Completed(), sent)
            assert result.status == SetStateStatus.ACCEPT
            assert sent == []  # the server has it
            assert scheduled.can_finish is (route == "finish route")

            read = {r.id: r for r in await read_runs_by_id(client, [theirs.id, ours.id])}
            a, b = read[theirs.id], read[ours.id]
            assert b.state_type == StateType.COMPLETED
            assert _comparable(b) == _comparable(a)
            states = [await client.read_flow_run_states(r.id) for r in (a, b)]
            assert [s.type for s in states[1]] == [s.type for s in states[0]]
            events = [
                (await _events(client, r.id, "prefect.flow-run.Completed"))[0] for r in (a, b)
            ]
            assert events[1]["id"] == str(b.state_id)
            same = {"event", "payload"}
            assert {k: events[1][k] for k in same} == {k: events[0][k] for k in same}
            made = await _artifacts_of(client, ours.id)
            assert made == await _artifacts_of(client, theirs.id)
            assert len(made) == 1
            if route == "finish route":
                # With the event Prefect's client emits when it creates one.
                response = await client.request(
                    "POST",
                    "/artifacts/filter",
                    json={"artifacts": {"flow_run_id": {"any_": [str(ours.id)]}}},
                )
                created = await _artifact_event(client, response.json()[0]["id"])
                assert created["payload"] == {"type": "markdown", "description": "Outputs"}
                assert [r["prefect.resource.id"] for r in created["related"]] == [
                    f"prefect.flow-run.{ours.id}"
                ]

            # Sent again after its answer was lost (the same transition): refused, and no
            # second artifact.
            final = Completed()
            final.state_details.transition_id = uuid.uuid4()
            first = await scheduled.finish(other.id, final, [artifact(other.id)])
            assert first.status == SetStateStatus.ACCEPT
            again = await scheduled.finish(other.id, final, [artifact(other.id)])
            if route == "finish route":
                assert again.status == SetStateStatus.REJECT
                assert again.state is not None
                assert first.state is not None
                assert again.state.id == first.state.id
                assert len(await _artifacts_of(client, other.id)) == 1
                # Only a final state finishes a run.
                with pytest.raises(httpx.HTTPStatusError) as not_final:
                    await client.request(
                        "POST",
                        scheduled_runs.FINISH_ROUTE,  # type: ignore[arg-type]
                        path_params={"id": ours.id},
                        json={"state": {"type": "RUNNING"}, "artifacts": []},
                    )
                assert not_final.value.response.status_code == 422

    asyncio.run(go())
