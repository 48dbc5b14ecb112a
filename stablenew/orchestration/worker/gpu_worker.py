"""The ``stablenew`` worker type: one long-lived process per GPU/WebUI, flow runs in-process.

Prefect's stock process worker starts a new Python process per run (seconds of imports and
engine start-up while the GPU idles). This worker keeps the flow loaded and the WebUI session
warm, drives each render run itself (``direct_run``; other flows go through Prefect's engine in
a thread), and still gets polling, heartbeats, pool creation and claim semantics from
:class:`BaseWorker`.

It also holds instead of draining the queue when its WebUI is not ready, turns a
CANCELLING run into a WebUI interrupt and a CANCELLED state (see ``cancel_watch``), stops
gracefully (:meth:`StableNewWorker.stop`: what it claimed goes back to its queue), waits out
Prefect API outages (``outage``), and puts right its own lost runs and those of its pool's
dead workers (``recovery_duty``, ``recovery``).
"""

from __future__ import annotations

import asyncio
import logging
import os
import time
from collections.abc import Callable
from datetime import UTC, datetime
from functools import partial
from typing import Any
from uuid import UUID

import anyio
import anyio.abc
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.responses import WorkerFlowRunResponse
from prefect.exceptions import Abort, ObjectNotFound
from prefect.flow_engine import run_flow
from prefect.flows import Flow, load_flow_from_entrypoint, load_flow_from_flow_run
from prefect.states import Cancelled, Pending
from prefect.utilities.engine import propose_state
from prefect.workers.base import (
    BaseJobConfiguration,
    BaseWorker,
)

from stablenew.orchestration._prefect import api_unavailable
from stablenew.orchestration.services.deployments import project_root
from stablenew.orchestration.services.pool import QUEUE_PRIORITY
from stablenew.orchestration.worker import cancellation, gpu_gate, recovery
from stablenew.orchestration.worker.cancel_watch import CancelWatch, Interrupter
from stablenew.orchestration.worker.direct_run import RENDER_FLOW, drive_render_run
from stablenew.orchestration.worker.gpu_gate import GpuGate, HandedBack, Rank
from stablenew.orchestration.worker.job_configuration import (
    StableNewJobConfiguration,
    StableNewVariables,
    StableNewWorkerResult,
)
from stablenew.orchestration.worker.outage import API_PATIENCE_SECONDS, ApiOutage
from stablenew.orchestration.worker.recovery_duty import (
    ORPHAN_MIN_AGE_SECONDS,
    RecoveryDuty,
    RecoveryPolicy,
)
from stablenew.orchestration.worker.scheduled_runs import ScheduledRuns
from stablenew.orchestration.worker.worker_state import publish_hold, withdraw

logger = logging.getLogger(__name__)

POOL_READ_SECONDS = 1.0
# A WebUI that answered is asked again after this long, not every poll tick (five HTTP calls a
# second into a busy WebUI); one that did not is asked every tick, so jobs resume at once.
READY_CHECK_SECONDS = 1.0
JUMP_POLL_SECONDS = 0.5  # a full lookahead looks for priority jumps this often (a count)
# A slot that frees while at least this many runs are still staged waits for a second one,
# and the two are claimed in one ask: on the server an ask for two cost 46.6 ms of CPU, for
# one 32.1 ms (40 and 80 asks). Meanwhile the lookahead counts as full (priority jumps).
PAIR_WHEN_STAGED = 2
# Only while a recent look saw this many runs due per slot of the worker's lookahead: pairs
# to the end of a queue leave the workers' lookaheads more uneven when it runs dry
# (bench/scaleout.py, 4 workers at 2 s per image: efficiency 0.902 and 0.904, against 0.926).
PAIR_WHEN_DUE_PER_SLOT = 2
# An idle worker counts this often, not every poll tick: 2.5 counts a second keep its cost to
# the server under 20 ms of CPU a second (bench/scaleout.py), for at most 0.4 s more before a
# job submitted to an idle pool starts.
IDLE_COUNT_SECONDS = 0.4
FIRST_START_ALONE_SECONDS = 2.0  # bound on holding back the lookahead for an idle start
WITHDRAW_SECONDS = 5.0  # bound on withdrawing what the worker published, at shutdown
INTERRUPTED_EXIT_SECONDS = 15.0  # after interrupting the WebUI, bound on the run ending
LABEL_ATTEMPTS = 3
LOAD_RETRY_SECONDS = 30.0  # a worker whose flow code does not load holds this long, then retries
# Bound on the GPU grant's ownership check: an answer within the flow's wait for it, also
# while the Prefect API is down (no answer then counts as "still ours").
GRANT_CHECK_SECONDS = cancellation.CONFIRM_SECONDS / 2

ReadinessCheck = Callable[[], str | None]
"""Returns ``None`` when the WebUI is ready, else a human reason (run in a thread)."""


class StableNewWorker(
    BaseWorker[StableNewJobConfiguration, StableNewVariables, StableNewWorkerResult]
):
    type = "stablenew"
    job_configuration = StableNewJobConfiguration
    job_configuration_variables = StableNewVariables
    _description = "Runs StableNew jobs in-process: one worker per GPU/WebUI, no process per run."
    _documentation_url = "https://github.com/stablenew/stablenew"

    def __init__(
        self,
        *args: Any,
        readiness_check: ReadinessCheck | None = None,
        interrupter: Interrupter | None = None,
        lookahead: int | None = None,
        min_poll_seconds: float = 0.0,
        recovery_policy: RecoveryPolicy | None = None,
        **kwargs: Any,
    ) -> None:
        """``lookahead=N`` makes this the process's GPU worker: one job renders while up to N
        more are claimed and started, waiting at the GPU gate (``None``: a plain worker).
        ``min_poll_seconds`` spaces this worker's polls out beyond Prefect's query interval
        (for the control pool, which gets a run a minute: each poll costs the server writes).
        ``recovery_policy`` makes the worker recover its pool's dead workers' runs (and, when
        it starts, any its own name still holds from a previous life)."""
        self.gate: GpuGate | None = None
        self._cap = 0
        if lookahead is not None:
            self._cap = 1 + lookahead
            # One slot more than the cap: room for a run that outranks every staged one.
            kwargs["limit"] = self._cap + 1
            self.gate = GpuGate()
            self.gate.on_grant = self._on_grant
            gpu_gate.install(self.gate)
        super().__init__(*args, **kwargs)
        self._readiness_check = readiness_check
        self._last_ready_check = -READY_CHECK_SECONDS
        self._interrupter = interrupter
        self._flows: dict[UUID, Flow[..., Any]] = {}
        self._flows_lock = asyncio.Lock()
        self._watch: CancelWatch | None = None
        self._last_pool_read = 0.0
        self._last_jump_poll = 0.0
        # Counts before it asks (see scheduled_runs); the client exists once the worker runs.
        self.scheduled = ScheduledRuns(
            lambda: self.client, self._work_pool_name, lambda: self._work_queues
        )
        self._last_idle_count = 0.0
        self._idle_claim_at = 0.0
        self._loop: asyncio.AbstractEventLoop | None = None
        self._min_poll_seconds = min_poll_seconds
        self._last_poll = -min_poll_seconds
        self.hold_reason: str | None = None
        self._recovered_own = recovery_policy is None
        self.duty = (
            RecoveryDuty(
                recovery_policy,
                worker_name=self.name,
                pool_name=self._work_pool_name,
                client=lambda: self.client,
                holds=lambda i: self._holds(i) or i in self._submitting_flow_run_ids,
                logger=self._logger,
            )
            if recovery_policy is not None
            else None
        )
        self._unlabeled: set[UUID] = set()
        self._claimed: set[UUID] = set()  # claimed and labelled by the server's claim route
        self._started: set[UUID] = set()  # RUNNING since their GPU grant
        self._stopping = False
        self._stop_now = asyncio.Event()
        # Why this worker cannot run jobs at all (its copy of the flow code does not load):
        # it holds, so the queue is not drained into crashes; tried again after a while.
        self._cannot_run: str | None = None
        self._retry_load_at = 0.0
        # While the Prefect API is away the worker waits for it instead of exiting.
        self.outage = ApiOutage(self._logger, probe=self._hello)

    async def _hello(self) -> None:
        if self._client is not None:
            await self._client.hello()

    async def sync_with_backend(self) -> None:
        await self.outage.through(super().sync_with_backend, None, patience=API_PATIENCE_SECONDS)

    # -- polling --------------------------------------------------------------------------

    async def get_and_submit_flow_runs(self) -> list[FlowRun]:
        self._loop = asyncio.get_running_loop()
        if self._stopping:
            return []
        if self.duty is not None and not self.outage.ongoing:
            # Not cut short: putting many runs right may take longer than one poll's patience.
            await self.outage.through(partial(self._recovery_duty, self.duty), None)
        return await self.outage.through(self._poll, [], patience=API_PATIENCE_SECONDS)

    async def _poll(self) -> list[FlowRun]:
        if self._min_poll_seconds:
            now = time.monotonic()
            if now - self._last_poll < self._min_poll_seconds:
                return []
            self._last_poll = now
        reason: str | None = None
        if self._cannot_run is not None and time.monotonic() < self._retry_load_at:
            reason = self._cannot_run
        elif self._readiness_check is not None:
            reason = await self._readiness()
        if reason != self.hold_reason:
            if reason:
                self._logger.warning("Holding: %s. Jobs stay queued.", reason)
            else:
                self._logger.info("Ready; taking jobs.")
            self.hold_reason = reason
            await publish_hold(self.client, self.name, reason, self._logger)
        if reason:
            return []
        if self.gate is None:
            if not await self.scheduled.worth_asking():
                return []
            return self.scheduled.asked(await super().get_and_submit_flow_runs(), None)
        return await self._claim_for_gpu(self.gate)

    async def _readiness(self) -> str | None:
        assert self._readiness_check is not None
        now = time.monotonic()
        if self.hold_reason is None and now - self._last_ready_check < READY_CHECK_SECONDS:
            return None
        self._last_ready_check = now
        return await anyio.to_thread.run_sync(self._readiness_check)

    async def _recovery_duty(self, duty: RecoveryDuty) -> None:
        if not self._recovered_own:
            # Before the first claim: whatever this name still holds is from a previous
            # life of this worker (a restart on the same GPU), and nothing of it runs here.
            self._recovered_own = await duty.recover_own("was restarted")
            if self._recovered_own:
                await withdraw(self.client, self.name, self._logger)
        if self.outage.lost_touch and not self.outage.ongoing:
            # Runs whose end (or hand-back) the API could not take while this worker lived;
            # one of ours too young to judge is looked at again at the next poll.
            self.outage.lost_touch = not await duty.recover_own(
                "lost track of it while the Prefect API was unreachable",
                min_age=ORPHAN_MIN_AGE_SECONDS,
            )
        duty.maybe_scan(self._runs_task_group)

    async def _claim_for_gpu(self, gate: GpuGate) -> list[FlowRun]:
        stale = gate.drop_stale(lambda i: i in self._submitting_flow_run_ids or self._holds(i))
        if stale:
            # Seen once in CI, after a pack was cancelled while being claimed: the GPU then
            # idled 15 s after every job. The warning is there to find where it comes from.
            self._logger.warning("GPU gate: dropped stale announced run(s) %s", stale)
        if int(self.limiter.borrowed_tokens) > self._cap:
            return []  # the one slot beyond the lookahead is taken by a priority jump
        in_flight = int(self.limiter.borrowed_tokens)
        free = self._cap - in_flight
        full = free == 0 or (free == 1 and self._pairing(in_flight))
        now = time.monotonic()
        # Staged runs hold while the pool is paused: the gate learns of it within a second.
        # A paused pool hands out no runs, so nothing is asked for meanwhile.
        if (in_flight or gate.paused) and await self._paused(gate, now):
            return []
        queues: list[str] | None = None
        if full:
            # Nothing can be claimed but a priority jump, so look only at the queues that
            # rank above every staged run (none: nothing to ask), for one run, and only every
            # JUMP_POLL_SECONDS, not every tick: a jump waits for the generating job anyway.
            if now - self._last_jump_poll < JUMP_POLL_SECONDS:
                return []
            self._last_jump_poll = now
            staged = gate.staged()
            worst = max((rank[0] for rank in staged.values()), default=0)
            queues = [name for name, prio in QUEUE_PRIORITY.items() if prio < worst]
            if self.scheduled.ready_poll_due(now) and self.scheduled.can_claim:
                await self._claim(0, None)  # claims nothing; keeps every queue "ready"
            if self.scheduled.ready_poll_due(now):
                queues = None  # every queue, so all stay "ready"; only a better run is taken
            elif not queues or not await self.scheduled.worth_asking(queues):
                return []
        else:
            if (
                in_flight
                and gate.holder is None
                and now - self._idle_claim_at < FIRST_START_ALONE_SECONDS
            ):
                # The first run after idle starts alone: five starting together took ~1 s to
                # reach RUNNING here, one ~0.3 s. The lookahead fills once it holds the GPU.
                return []
            if not in_flight:
                if now - self._last_idle_count < IDLE_COUNT_SECONDS:
                    return []
                self._last_idle_count = now
            if not await self.scheduled.worth_asking():
                return []
            if not in_flight and await self._paused(gate, now):
                return []
        if in_flight == 0:
            self._idle_claim_at = now
        # Our server claims the runs it hands out (see server/claim_route.py): as many as
        # this worker takes, a priority jump only from the queues that rank above the staged.
        claimed = await self._claim(1 if full or in_flight == 0 else free, queues)
        if claimed is not None:
            return await self._submit_claimed(gate, claimed)
        # Any other Prefect server: ask, then claim run by run. The free slots, and one
        # more: a run that outranks everything staged takes the slot beyond the lookahead.
        # Each run asked for comes with its record, which the server serializes and this
        # worker parses.
        limit = 1 if full or in_flight == 0 else free + 1
        responses = await self.scheduled.next(limit, queues)
        staged = gate.staged()
        chosen: list[WorkerFlowRunResponse] = []
        for response in responses:
            run = response.flow_run
            if run.id in self._submitting_flow_run_ids or self._holds(run.id):
                # Still held here: put back in the queue (this worker was judged dead) while
                # its flow has yet to notice; it is claimable once that flow has let go.
                continue
            if in_flight + len(chosen) < self._cap:
                chosen.append(response)
                continue
            # Full: claim one more only if it must render before everything staged.
            if (
                in_flight + len(chosen) == self._cap
                and staged
                and rank_of(run) < max(staged.values())
            ):
                chosen.append(response)
            break
        for response in chosen:
            gate.expect(response.flow_run.id, rank_of(response.flow_run))
        submitted = await self._submit_scheduled_flow_runs(chosen)
        submitted_ids = {run.id for run in submitted}
        for response in chosen:
            if response.flow_run.id not in submitted_ids:
                gate.forget(response.flow_run.id)
        return submitted

    def _pairing(self, in_flight: int) -> bool:
        """Whether a freed slot waits for a second (see PAIR_WHEN_STAGED)."""
        if in_flight - 1 < PAIR_WHEN_STAGED:
            return False
        due = self.scheduled.due_seen()
        return due is not None and due >= PAIR_WHEN_DUE_PER_SLOT * self._cap

    async def _claim(
        self, limit: int, queues: list[str] | None
    ) -> list[WorkerFlowRunResponse] | None:
        exclude = list(self._submitting_flow_run_ids)
        if self._watch is not None:
            # Still held here (put back in the queue, this worker judged dead, while its flow
            # has yet to notice): claimable again once that flow has let go.
            exclude += self._watch.tracked()
        try:
            return await self.scheduled.claim(
                limit,
                queues,
                message=recovery.claim_message(self.name),
                labels=self._worker_labels(),
                exclude=exclude,
            )
        except BaseException:
            # The server may have claimed runs for this worker whose answer never came: they
            # are looked for (and put back) once the API answers again.
            self.outage.lost_touch = True
            raise

    def _worker_labels(self) -> dict[str, Any]:
        """The labels BaseWorker gives every run it claims (see
        ``_give_worker_labels_to_flow_run``)."""
        labels: dict[str, Any] = {
            "prefect.worker.name": self.name,
            "prefect.worker.type": self.type,
        }
        if self._work_pool is not None:
            labels["prefect.work-pool.name"] = self._work_pool.name
            labels["prefect.work-pool.id"] = str(self._work_pool.id)
        return labels

    async def _submit_claimed(
        self, gate: GpuGate, claimed: list[WorkerFlowRunResponse]
    ) -> list[FlowRun]:
        """Start runs the server has claimed (PENDING, labelled) for this worker."""
        for response in claimed:
            self._claimed.add(response.flow_run.id)
            gate.expect(response.flow_run.id, rank_of(response.flow_run))
        submitted = await self._submit_scheduled_flow_runs(claimed)
        submitted_ids = {run.id for run in submitted}
        for response in claimed:
            run = response.flow_run
            if run.id not in submitted_ids:
                gate.forget(run.id)
                self._claimed.discard(run.id)
                await self._hand_back(run, f"Handed back: {self.name} had no slot for it")
        return submitted

    async def _paused(self, gate: GpuGate, now: float) -> bool:
        """Whether the pool is paused: as the cancel watch's look saw it if that is under
        POOL_READ_SECONDS old, else read at most every POOL_READ_SECONDS (the gate keeps
        the flag: staged runs hold while it is set)."""
        look = self.scheduled.fresh_look(POOL_READ_SECONDS)  # the cancel watch's, if recent
        if look is not None:
            gate.set_paused(look.is_paused)
        elif now - self._last_pool_read >= POOL_READ_SECONDS:
            self._last_pool_read = now
            pool = await self.client.read_work_pool(self._work_pool_name)
            gate.set_paused(bool(pool.is_paused))
        return gate.paused

    def _release_limit_slot(self, flow_run_id: UUID) -> None:
        super()._release_limit_slot(flow_run_id)
        self._claimed.discard(flow_run_id)
        self._started.discard(flow_run_id)
        if self._watch is not None:
            self._watch.untrack(flow_run_id)
        if self.gate is not None:
            self.gate.forget(flow_run_id)

    def _holds(self, flow_run_id: UUID) -> bool:
        return self._watch is not None and self._watch.tracks(flow_run_id)

    def _on_grant(self, flow_run_id: UUID) -> None:
        """Called on the flow's thread when a run gets the GPU. Starts the run (RUNNING) if
        it is still this worker's claim and not being cancelled (the cancel watch may not
        have looked since it was taken back or cancelled), on the worker's loop, while the
        WebUI already generates: waiting for the answer would leave every GPU idle ~20 ms
        per job, to spare a rare generation that the answer cuts short anyway (see
        cancellation). A run staged behind the GPU stays PENDING: RUNNING is what generates
        (or writes what it generated), which recovery, the queue view and ``cancel
        --current`` rely on."""
        loop = self._loop
        try:
            if loop is None or loop.is_closed():
                raise RuntimeError("event loop is closed")
            verdict = asyncio.run_coroutine_threadsafe(self._granted(flow_run_id), loop)
        except RuntimeError:
            cancellation.take_back(flow_run_id, f"{self.name} has stopped working")
            return
        cancellation.expect_verdict(flow_run_id, verdict)

    async def _granted(self, flow_run_id: UUID) -> None:
        run: FlowRun | None = None
        with anyio.move_on_after(GRANT_CHECK_SECONDS):
            run = await self.scheduled.start(flow_run_id, recovery.claim_message(self.name))
        # No answer in time (the API is down) counts as ours: the run finishes here, and
        # proposes RUNNING before its end (see direct_run).
        if run is None:
            return
        watch = self._cancel_watch()
        if watch is not None:
            await watch.judge(run, started=True)  # taken back, cancelled, or still ours
        if (
            run.state_type == StateType.RUNNING
            and recovery.claimant(run) == self.name
            and flow_run_id not in self._started
        ):
            self._started.add(flow_run_id)
            self.get_flow_run_logger(run).info(
                "Beginning flow run %r for flow %r", run.name, RENDER_FLOW
            )

    async def _started_here(self, flow_run_id: UUID) -> bool:
        """Whether this worker started the run (RUNNING at its GPU grant), once the grant's
        start, if one is under way, has answered."""
        verdict = cancellation.verdict_of(flow_run_id)
        if verdict is not None and not verdict.done():
            # asyncio.wait, not await: a check that failed or was dropped is no error here.
            await asyncio.wait([asyncio.wrap_future(verdict)], timeout=GRANT_CHECK_SECONDS + 1)
        return flow_run_id in self._started

    # -- recovery ---------------------------------------------------------------------------

    async def _hand_back(self, flow_run: FlowRun, reason: str) -> None:
        try:
            await recovery.requeue(self.client, flow_run, reason)
            self.get_flow_run_logger(flow_run).info(reason)
        except Exception as exc:
            # Left claimed here: looked for again once the API answers (or, should this
            # worker die first, put back by the pool's recovery).
            self.outage.lost_touch = True
            self._logger.warning("could not hand back flow run %s: %r", flow_run.id, exc)

    # -- stopping -------------------------------------------------------------------------

    async def stop(self, grace: float, interrupter: Interrupter | None = None) -> None:
        """Stop claiming at once, hand back every claimed run that is not generating, let the
        generating one finish for up to ``grace`` seconds (then interrupt the WebUI and hand
        it back too), and return once nothing is in flight. :meth:`stop_now` cuts the grace.
        """
        self._stopping = True
        if self.gate is not None:
            self.gate.hand_back()
        with anyio.move_on_after(grace):
            while self._in_flight() and not self._stop_now.is_set():
                await anyio.sleep(0.1)
        if not self._in_flight():
            return
        if self.gate is not None:
            self.gate.hand_back(holder=True)
        if interrupter is not None and self.gate is not None and self.gate.holder is not None:
            self._logger.warning("Grace period over: interrupting the WebUI to stop")
            try:
                await anyio.to_thread.run_sync(interrupter)
            except Exception as exc:
                self._logger.warning("WebUI interrupt failed: %s", exc)
        with anyio.move_on_after(INTERRUPTED_EXIT_SECONDS):
            while self._in_flight():
                await anyio.sleep(0.1)

    def stop_now(self) -> None:
        """A second Ctrl-C: no more grace for the generating run."""
        self._stop_now.set()

    def _in_flight(self) -> int:
        return int(self.limiter.borrowed_tokens) if self._limiter is not None else 0

    # -- shutdown -------------------------------------------------------------------------

    async def teardown(self, *exc_info: Any) -> None:
        """Withdraw this worker's hold before the client closes: a stopped worker does not
        hold. Bounded and shielded, so a cancelled shutdown (Ctrl-C) still tries, and a slow
        server cannot keep the worker from exiting."""
        if self._client is not None:
            with anyio.CancelScope(shield=True), anyio.move_on_after(WITHDRAW_SECONDS):
                await withdraw(self._client, self.name, self._logger)
        await super().teardown(*exc_info)

    # -- running --------------------------------------------------------------------------

    async def _propose_pending_state(self, flow_run: FlowRun) -> bool:
        """Claim the run, saying by whom in the same write: if this worker dies before the
        run starts, the pool knows whose claim to give back (see ``recovery``)."""
        if flow_run.id in self._claimed:
            return True  # claimed by the server for this worker, in the same words
        try:
            state = await propose_state(
                self.client,
                Pending(message=recovery.claim_message(self.name)),
                flow_run_id=flow_run.id,
            )
        except Abort as exc:
            self._logger.debug("claim of %s aborted: %s", flow_run.id, exc)
            return False
        except Exception:
            self._logger.exception("could not claim flow run %s", flow_run.id)
            return await self._claimed_anyway(flow_run)
        return state.is_pending()

    async def _claimed_anyway(self, flow_run: FlowRun) -> bool:
        """After a claim whose answer was lost (a timeout, a dropped connection): whether the
        server took it. A claim it took and nobody ran would stay PENDING (or CANCELLING)
        under a live worker, which recovery never touches."""
        try:
            state = (await self.client.read_flow_run(flow_run.id)).state
        except Exception:
            # Unknown (the API is down): if the server took it, the worker gives it back
            # once the API answers again (see _poll); a live worker's runs are nobody else's.
            self.outage.lost_touch = True
            return False
        return (
            state is not None
            and state.is_pending()
            and state.message == recovery.claim_message(self.name)
        )

    async def _give_worker_labels_to_flow_run(self, flow_run_id: UUID) -> None:
        """The worker's name on the run says who runs it (history shows it, recovery relies
        on it); a run that cannot be labelled is handed back, not run: in BaseWorker a
        failed label write would report the whole run as CRASHED."""
        if flow_run_id in self._claimed:
            self._claimed.discard(flow_run_id)
            return  # labelled by the server as it claimed the run
        for attempt in range(LABEL_ATTEMPTS):
            try:
                await super()._give_worker_labels_to_flow_run(flow_run_id)
                return
            except Exception as exc:
                if attempt == LABEL_ATTEMPTS - 1:
                    self._logger.warning("could not label flow run %s: %s", flow_run_id, exc)
                    self._unlabeled.add(flow_run_id)
                else:
                    await anyio.sleep(0.2 * (attempt + 1))

    async def _submit_run(self, flow_run: FlowRun) -> None:
        """BaseWorker's, less two requests per job: its read of the run's deployment (only
        to cancel runs of a deleted one; :meth:`_load_flow` reads each deployment once) and
        its PATCH of ``infrastructure_pid`` (Prefect's cancellation kills that process; here
        the process is the worker itself, and the cancel watch stops the run instead)."""
        if await self._propose_pending_state(flow_run):
            watch = self._cancel_watch()
            if watch is not None:
                watch.track(flow_run)
            assert self._runs_task_group is not None
            started = await self._runs_task_group.start(
                self._submit_run_and_capture_errors, flow_run
            )
            if not started or isinstance(started, Exception):
                self._release_limit_slot(flow_run.id)
        else:
            self._release_limit_slot(flow_run.id)
        self._submitting_flow_run_ids.discard(flow_run.id)

    def _emit_flow_run_submitted_event(self, configuration: BaseJobConfiguration) -> None:
        """Not emitted (nor, then, its "executed" twin): two events per job that only repeat
        what the run's own state events say, each written by the server."""
        return None

    async def _propose_submitting_state(self, flow_run: FlowRun) -> None:
        """Skipped: "Submitting" is a second PENDING-type state between Pending and Running.
        For an in-process run that starts at once it only costs a state write, its event and
        an orchestration pass per job."""

    async def _load_flow(self, flow_run: FlowRun) -> Flow[..., Any]:
        """The run's flow from this worker's own copy of the project: the deployment names
        its entrypoint (relative), never a path on the machine that deployed it. Loaded once
        per deployment."""
        key = flow_run.deployment_id or flow_run.flow_id
        async with self._flows_lock:
            cached = self._flows.get(key)
            if cached is not None:
                return cached
            if flow_run.deployment_id is None:
                flow = await load_flow_from_flow_run(flow_run)
            else:
                deployment = await self.client.read_deployment(flow_run.deployment_id)
                if not deployment.entrypoint:
                    raise ValueError(f"deployment {deployment.name!r} has no entrypoint")
                entrypoint = str(project_root() / deployment.entrypoint)
                flow = await anyio.to_thread.run_sync(load_flow_from_entrypoint, entrypoint)
            self._flows[key] = flow
            return flow

    def _cancel_watch(self) -> CancelWatch | None:
        if self._watch is None and self._runs_task_group is not None:
            self._watch = CancelWatch(
                self.client,
                self._runs_task_group,
                holds_gpu=lambda run_id: self.gate is None or self.gate.holder == run_id,
                interrupter=self._interrupter,
                run_logger=self.get_flow_run_logger,
                logger=self._logger,
                worker_name=self.name,
                look=self.scheduled.look,
            )
        return self._watch

    async def run(
        self,
        flow_run: FlowRun,
        configuration: StableNewJobConfiguration,
        task_status: anyio.abc.TaskStatus[int] | None = None,
    ) -> StableNewWorkerResult:
        # In-process, a claimed run has started as soon as this worker holds it.
        if task_status is not None:
            task_status.started(os.getpid())
        try:
            await self._run_claimed(flow_run)
        except Exception:
            self.outage.lost_touch = True  # its end may not have been written
            raise
        # Every path of _run_claimed leaves a final state, a run handed back or one
        # cancelling; non-zero would make BaseWorker propose CRASHED on top of it.
        return StableNewWorkerResult(identifier=str(flow_run.id), status_code=0)

    async def _run_claimed(self, flow_run: FlowRun) -> None:
        reason = None
        if self._stopping:
            reason = f"Handed back: {self.name} is stopping"
        elif flow_run.id in self._unlabeled:
            self._unlabeled.discard(flow_run.id)
            reason = f"Handed back: {self.name} could not label it"
        if reason is not None:
            await self._hand_back(flow_run, reason)
            return
        try:
            flow = await self._load_flow(flow_run)
        except ObjectNotFound:
            await self.client.set_flow_run_state(
                flow_run.id, Cancelled(message="its deployment no longer exists"), force=True
            )
            return
        except Exception as exc:
            # The job is not at fault; this worker is: give the run back and hold.
            self._cannot_run = f"cannot load the flow code: {exc!r}"[:500]
            self._retry_load_at = time.monotonic() + LOAD_RETRY_SECONDS
            await self._hand_back(flow_run, f"Handed back: {self.name} {self._cannot_run}")
            return
        self._cannot_run = None

        # The watch has followed the run since its claim (see _submit_run).
        watch = self._watch
        if cancellation.taken_back(flow_run.id):
            return  # requeued or claimed elsewhere while it was set up: not ours to start
        if watch is not None and watch.cancelled(flow_run.id):
            # Cancelled while it was being set up: never start it (Prefect would accept
            # RUNNING if the watch has already ended it CANCELLED).
            await self._end_unfinished(flow_run, None, None)
            return
        state: State[Any] | None = None
        error: BaseException | None = None
        try:
            if flow.name == RENDER_FLOW:
                logger = self.get_flow_run_logger(flow_run)
                started = partial(self._started_here, flow_run.id) if self.gate else None
                state = await drive_render_run(
                    self.client, flow_run, logger, finish=self.scheduled.finish, started=started
                )
            else:
                state = await anyio.to_thread.run_sync(
                    partial(_run_flow_blocking, flow, flow_run), abandon_on_cancel=True
                )
        except HandedBack as exc:
            # No final state written (an Abort); the run goes back to its queue.
            await self._hand_back(flow_run, f"Handed back: {self.name} is stopping ({exc})")
            return
        except cancellation.TakenBack as exc:
            # No state written (an Abort): whoever holds the run now finishes it.
            await self._after_taken_back(flow_run, str(exc))
            return
        except BaseException as exc:  # the run must never stay RUNNING
            error = exc
        finally:
            if watch is not None:
                watch.untrack(flow_run.id)
        if state is None or not state.is_final():
            await self._end_unfinished(flow_run, state, error)

    async def _after_taken_back(self, flow_run: FlowRun, reason: str) -> None:
        """A run taken back is left to whoever holds it, unless it turns out to be still
        ours (its ownership could not be confirmed in time): then it goes back to its queue,
        since nothing else would ever end it."""
        try:
            run = await self.client.read_flow_run(flow_run.id)
        except Exception as exc:
            self.outage.lost_touch = True
            self._logger.warning("could not read back taken-back run %s: %r", flow_run.id, exc)
            return
        if recovery.claimant(run) == self.name and run.state_type in (
            StateType.PENDING,
            StateType.RUNNING,
        ):
            await self._hand_back(run, f"Handed back: {self.name} lost track of it ({reason})")
        elif recovery.claimant(run) == self.name and run.state_type == StateType.CANCELLING:
            await self.client.set_flow_run_state(run.id, Cancelled(message="cancelled"), force=True)
        else:
            self._logger.info("left flow run %s to its new holder: %s", flow_run.id, reason)

    def abandon(self) -> None:
        """The worker's loop has ended unexpectedly: nothing of it can write or hand back
        any more. Every flow still waiting for the GPU (and the generating one, interrupted)
        ends without writing a state; the pool's recovery, or this worker restarted under
        its name, puts the runs back."""
        if self.gate is None:
            return
        self.gate.hand_back(holder=True)
        if self._interrupter is not None and self.gate.holder is not None:
            try:
                self._interrupter()
            except Exception as exc:
                self._logger.warning("WebUI interrupt failed: %s", exc)

    async def _end_unfinished(
        self, flow_run: FlowRun, state: State[Any] | None, error: BaseException | None
    ) -> None:
        """The engine returned without a final state or raised: give the run one.

        A run cancelled between its claim and its start had its RUNNING refused, so nothing
        ran and nothing else will end it; an engine failure would be reported CRASHED, but
        Prefect refuses anything but CANCELLED for a CANCELLING run (it would stay so)."""
        try:
            current = (await self.client.read_flow_run(flow_run.id)).state
        except Exception:
            current = state
        if current is not None and current.is_final():
            return
        if (current is not None and current.is_cancelling()) or (
            state is not None and state.is_cancelling()
        ):
            message = "cancelled before it started" if error is None else "cancelled"
            await self.client.set_flow_run_state(
                flow_run.id, Cancelled(message=message), force=True
            )
        elif error is not None and api_unavailable(error) and self.duty is not None:
            # Not the job's fault: what a dead worker's runs get (back in the queue, or
            # CRASHED and re-run once if it was generating), with the reason.
            await recovery.recover_worker(
                self.client,
                self.name,
                [flow_run],
                why=f"could not reach the Prefect API ({type(error).__name__})",
                retries_on_crash=self.duty.policy.retries_on_crash,
                logger=self._logger,
            )
        elif error is not None:
            await self._propose_crashed_state(
                flow_run, f"worker caught {type(error).__name__}: {error}"
            )


def rank_of(run: FlowRun) -> Rank:
    """Order in which the GPU serves claimed runs: queue priority, then expected start."""
    when = run.expected_start_time or run.created or datetime.now(UTC)
    return (QUEUE_PRIORITY.get(run.work_queue_name or "", 99), when)


def _run_flow_blocking(flow: Flow[..., Any], flow_run: FlowRun) -> State[Any]:
    """Run one flow run through Prefect's engine on this (worker) thread."""
    result = run_flow(flow, flow_run=flow_run, return_type="state")
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    if not isinstance(result, State):
        raise TypeError(f"engine returned {type(result).__name__}, expected a State")
    return result
