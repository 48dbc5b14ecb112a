"""Where a worker gets its next runs from the server, and when asking is worth it.

On our server a worker asks through the claim route, which hands it the runs already claimed
(``server/claim_route.py``), and starts each through the start route; on any other Prefect
server it asks with ``get_scheduled_flow_runs`` and claims each run itself. Asking also marks
the queues and deployments polled, which writes: about 25 ms of the server's CPU per ask here,
where counting the runs that are due costs about 3.5 (``bench/overhead.py``). So a worker with
nothing to fill counts first, and asks only when a run is due, when its last ask left runs
behind, or every ``READY_POLL_SECONDS`` anyway, well inside the 60 s after which Prefect shows
an unpolled queue or deployment as not ready.

While it has runs in flight the worker also looks at the pool twice a second (its cancel
watch): on our server that one read also answers whether the pool is paused and which queues
have runs due (``server/look_route.py``), so a look that recent stands in for a count and for
a read of the pool. A run's final state goes with its artifact, in one request
(``server/finish_route.py``).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any, TypeVar
from uuid import UUID, uuid4

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas import OrchestrationResult
from prefect.client.schemas.actions import ArtifactCreate
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
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.exceptions import Abort
from prefect.states import Running, to_state_create
from prefect.utilities.engine import propose_state

CLAIM_ROUTE = "/stablenew/work_pools/{name}/claim"  # see server/claim_route.py
START_ROUTE = "/stablenew/flow_runs/{id}/start"
LOOK_ROUTE = "/stablenew/work_pools/{name}/look"  # see server/look_route.py
FINISH_ROUTE = "/stablenew/flow_runs/{id}/finish"  # see server/finish_route.py
# A look this recent stands in for a count of the runs due (the cancel watch looks every
# 0.5 s; the slack keeps a tick's jitter from sending a count beside every look).
LOOK_FRESH_SECONDS = 0.75
READY_POLL_SECONDS = 10.0
FRUITLESS_ASK_SECONDS = 1.0  # the count saw runs the ask did not get (a paused queue): back off

T = TypeVar("T")


@dataclass(frozen=True)
class PoolLook:
    """What the last look at the pool saw, and when (``time.monotonic()``)."""

    at: float
    is_paused: bool
    due: dict[str, int]  # runs due now, by queue name


class ScheduledRuns:
    """The scheduled runs of one pool (and, if the worker has some, of its queues only)."""

    def __init__(
        self, client: Callable[[], PrefectClient], pool: str, queues: Callable[[], set[str]]
    ) -> None:
        self._client = client
        self._pool = pool
        self._queues = queues  # the worker's own queues (empty: all), read when asked
        self._last_ask = 0.0
        self._left_some = False
        self._counted_due = False
        self._quiet_until = 0.0
        self.can_claim = True  # until the server turns out to lack our claim route
        self.can_start = True  # likewise, its start route
        self.can_look = True  # likewise, its look route
        self.can_finish = True  # likewise, its finish route
        self._look: PoolLook | None = None

    def ready_poll_due(self, now: float) -> bool:
        """Whether the queues must be asked now, due runs or not, to stay "ready"."""
        return now - self._last_ask >= READY_POLL_SECONDS

    async def worth_asking(self, queues: list[str] | None = None) -> bool:
        """Whether to ask now: the ready poll is due, or the last ask left runs behind, or a
        run is due in ``queues`` (``None``: every queue served; counted, not read)."""
        now = time.monotonic()
        self._counted_due = False
        if self.ready_poll_due(now) or (queues is None and self._left_some):
            return True
        if now < self._quiet_until:
            return False
        self._counted_due = await self.due(queues)
        return self._counted_due

    def asked(self, got: list[T], limit: int | None) -> list[T]:
        """Note an ask and what it got (``limit``: how many it asked for; ``None``: all)."""
        now = time.monotonic()
        self._last_ask = now
        self._left_some = limit is not None and 0 < limit <= len(got)
        if not got and self._counted_due:
            # Counted as due, yet not handed out (a paused queue, a concurrency limit):
            # counting again at once would only repeat that.
            self._quiet_until = now + FRUITLESS_ASK_SECONDS
        return got

    async def due(self, queues: list[str] | None) -> bool:
        """Whether a scheduled run is due now in ``queues`` (``None``: every queue served)."""
        names = queues if queues is not None else sorted(self._queues()) or None
        look = self.fresh_look(LOOK_FRESH_SECONDS)
        if look is not None:
            return any(n > 0 for name, n in look.due.items() if not names or name in names)
        count = await self._client().count_flow_runs(
            flow_run_filter=FlowRunFilter(
                state=FlowRunFilterState(type=FlowRunFilterStateType(any_=[StateType.SCHEDULED])),
                next_scheduled_start_time=FlowRunFilterNextScheduledStartTime(
                    before_=datetime.now(UTC)
                ),
            ),
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[self._pool])),
            work_queue_filter=(
                WorkQueueFilter(name=WorkQueueFilterName(any_=names)) if names else None
            ),
        )
        return count > 0

    async def look(self, flow_run_ids: list[UUID]) -> list[FlowRun] | None:
        """The runs of ``flow_run_ids`` that are neither PENDING nor RUNNING, read in one
        request with the pool's pause flag and its runs due per queue, which are kept for
        :meth:`due` and :meth:`fresh_look` (see ``server/look_route.py``). ``None`` when
        the server cannot answer it (any Prefect server but ours; a pool gone): the caller
        then reads the runs with Prefect's filter."""
        if not self.can_look:
            return None
        try:
            response = await self._post_ours(
                LOOK_ROUTE,
                {"name": self._pool},
                {"flow_run_ids": [str(run_id) for run_id in flow_run_ids]},
            )
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 404:
                return None  # the pool is gone
            raise
        if response is None:
            self.can_look = False
            return None
        body = response.json()
        self._look = PoolLook(
            at=time.monotonic(),
            is_paused=bool(body["is_paused"]),
            due={str(name): int(n) for name, n in body["due"].items()},
        )
        return [FlowRun.model_validate(run) for run in body["changed"]]

    def fresh_look(self, max_age: float) -> PoolLook | None:
        """The last look at the pool, if it is at most ``max_age`` seconds old."""
        look = self._look
        if look is None or time.monotonic() - look.at > max_age:
            return None
        return look

    def due_seen(self) -> int | None:
        """Runs due in this worker's queues as a recent look saw them (``None``: none)."""
        look = self.fresh_look(LOOK_FRESH_SECONDS)
        if look is None:
            return None
        served = self._queues()
        return sum(n for name, n in look.due.items() if not served or name in served)

    def _asked_queues(self, queues: list[str] | None) -> list[str] | None:
        """The queue names an ask names: those of ``queues`` this worker serves (``[]``:
        none, nothing to ask), or ``None`` for every queue of the pool."""
        served = self._queues()
        if queues is not None:
            return [q for q in queues if not served or q in served]
        return sorted(served) or None

    async def next(
        self, limit: int, queues: list[str] | None = None
    ) -> list[WorkerFlowRunResponse]:
        """Ask for the ``limit`` best scheduled runs (queue priority, then time).

        Prefect's client asks for every scheduled run, each with its parameters (our full
        record); polled several times a second with a backlog, that serialization alone
        used more server CPU than the jobs. The server accepts a limit; we send it.
        """
        names = self._asked_queues(queues)
        if names == []:
            return self.asked([], limit)
        body: dict[str, Any] = {"scheduled_before": str(datetime.now(UTC)), "limit": limit}
        if names:
            body["work_queue_names"] = names
        try:
            response = await self._client().request(
                "POST",
                "/work_pools/{name}/get_scheduled_flow_runs",
                path_params={"name": self._pool},
                json=body,
            )
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 404:
                return self.asked([], limit)
            raise
        return self.asked(WorkerFlowRunResponse.model_validate_list(response.json()), limit)

    async def claim(
        self,
        limit: int,
        queues: list[str] | None,
        *,
        message: str,
        labels: dict[str, Any],
        exclude: list[Any],
    ) -> list[WorkerFlowRunResponse] | None:
        """Ask for the ``limit`` best scheduled runs, claimed in the same request (PENDING
        with ``message``, and ``labels``): see ``server/claim_route.py``. ``None`` when the
        server lacks the route (any Prefect server but ours): then :meth:`next` and a claim
        per run. ``limit`` 0 claims nothing and keeps the queues "ready"."""
        if not self.can_claim:
            return None
        names = self._asked_queues(queues)
        if names == []:
            return self.asked([], limit)
        body: dict[str, Any] = {
            "message": message,
            "labels": labels,
            "limit": limit,
            "exclude": [str(run_id) for run_id in exclude],
        }
        if names:
            body["work_queue_names"] = names
        try:
            response = await self._post_ours(CLAIM_ROUTE, {"name": self._pool}, body)
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 404:
                return self.asked([], limit)  # the pool or a queue is gone, as next() sees it
            raise
        if response is None:
            self.can_claim = False
            return None
        return self.asked(WorkerFlowRunResponse.model_validate_list(response.json()), limit)

    async def start(self, flow_run_id: UUID, claim_message: str) -> FlowRun:
        """Propose RUNNING for a run still PENDING with ``claim_message`` (this worker's
        claim), and answer the run as it is then (started here, cancelled meanwhile, or put
        back and claimed by another worker): see ``server/claim_route.py``. Against a server
        without the route: read, and propose RUNNING only if the claim is still ours."""
        client = self._client()
        if self.can_start:
            response = await self._post_ours(
                START_ROUTE, {"id": flow_run_id}, {"claim_message": claim_message}
            )
            if response is not None:
                return FlowRun.model_validate(response.json())
            self.can_start = False
        run = await client.read_flow_run(flow_run_id)
        state = run.state
        if state is None or not state.is_pending() or state.message != claim_message:
            return run
        try:
            state = await propose_state(client, Running(), flow_run_id=flow_run_id)
        except Abort:
            return await client.read_flow_run(flow_run_id)
        return run.model_copy(
            update={"state": state, "state_type": state.type, "state_name": state.name}
        )

    async def finish(
        self, flow_run_id: UUID, state: State[Any], artifacts: list[ArtifactCreate]
    ) -> OrchestrationResult[Any]:
        """Propose a run's final ``state``, as ``client.set_flow_run_state`` does, with its
        ``artifacts`` created in the same request if the state is accepted (see
        ``server/finish_route.py``); against a server without the route, created first.
        Once the server has them, they are removed from ``artifacts``; a state proposed
        again after a lost answer, with its ``transition_id``, is refused and brings none."""
        client = self._client()
        if self.can_finish and artifacts:
            state_create = to_state_create(state)
            state_create.state_details.flow_run_id = flow_run_id
            # One id per final state, kept when it is proposed again after a lost answer:
            # Prefect then refuses the repeat (PreventDuplicateTransitions), artifacts too.
            state_create.state_details.transition_id = state.state_details.transition_id or uuid4()
            response = await self._post_ours(
                FINISH_ROUTE,
                {"id": flow_run_id},
                {
                    "state": state_create.model_dump(mode="json", serialize_as_any=True),
                    "artifacts": [a.model_dump(mode="json", exclude_unset=True) for a in artifacts],
                },
            )
            if response is not None:
                artifacts.clear()
                return OrchestrationResult.model_validate(response.json())
            self.can_finish = False
        while artifacts:
            await client.create_artifact(artifacts[0])
            artifacts.pop(0)
        return await client.set_flow_run_state(flow_run_id, state)

    async def _post_ours(
        self, route: str, path_params: dict[str, Any], body: Any
    ) -> httpx.Response | None:
        """POST ``body`` to one of our server's routes; ``None`` when the server lacks the
        route (any Prefect server but ours). A 404 of the route itself (a pool, queue or run
        that is gone) is raised, as is every other error."""
        try:
            return await self._client().request(
                "POST",
                route,  # type: ignore[arg-type]
                path_params=path_params,
                json=body,
            )
        except httpx.HTTPStatusError as e:
            if e.response.status_code == 404 and _no_such_route(e.response):
                return None
            raise


def _no_such_route(response: httpx.Response) -> bool:
    """FastAPI's answer for a path it does not serve (ours name what is missing)."""
    try:
        return bool(response.json().get("detail") == "Not Found")
    except ValueError:
        return True
