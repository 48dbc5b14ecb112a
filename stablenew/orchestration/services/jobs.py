"""JobService: submit records as flow runs, cancel, pause/resume, and report status.

Prefect holds the queue and the state; this service only creates, finds and transitions flow
runs of the ``render-job`` deployment. A run is found again by its idempotency key, which is
the record's ``job_id`` (``job_id~N`` for the N-th deliberate re-submission).
"""

from __future__ import annotations

import asyncio
import logging
import secrets
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any, Literal, TypeVar

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import WorkPoolUpdate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterIdempotencyKey,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from prefect.exceptions import ObjectNotFound
from prefect.states import Cancelled, Cancelling, Scheduled

from stablenew.errors import DuplicateJob, JobNotFound, OrchestrationError, SubmissionError
from stablenew.orchestration._prefect import check_reachable, prefect_client, read_runs_by_id
from stablenew.orchestration.services import queue_control
from stablenew.orchestration.services.bulk_cancel import cancel_matching, settle
from stablenew.orchestration.services.deployments import RENDER_DEPLOYMENT, RENDER_FLOW_NAME
from stablenew.orchestration.services.pool import (
    DEFAULT_PRIORITY,
    check_priority,
)
from stablenew.orchestration.services.queue_control import Replaced
from stablenew.orchestration.services.queue_view import (
    ACTIVE,
    JobRef,
    QueueState,
    generating,
    job_id_of,
    job_ref,
    pool_runs,
    read_queue_state,
)
from stablenew.orchestration.services.submission import (
    BULK,
    MAX_RESUBMITS,
    Batch,
    Lineage,
    validate_records,
)
from stablenew.orchestration.worker.run_notes import WAITING_STATE
from stablenew.ordering import group_by_model
from stablenew.packs.model import Limits
from stablenew.records import MAX_SEED, NormalizedJobRecord, derive_with_seed

logger = logging.getLogger(__name__)

T = TypeVar("T")


class JobService:
    """Submit and control jobs. Every method opens its own short-lived Prefect client."""

    def __init__(self, *, pool: str = "stablenew-gpu") -> None:
        self.pool = pool
        self.deployment_name = f"{RENDER_FLOW_NAME}/{RENDER_DEPLOYMENT}"

    # -- submission -------------------------------------------------------------------------

    async def asubmit(
        self,
        records: Iterable[NormalizedJobRecord | dict[str, Any]],
        priority: str = DEFAULT_PRIORITY,
        *,
        allow_duplicates: bool = False,
        group_models: bool = True,
    ) -> list[str]:
        """Validate every record, then create one flow run each; all-or-nothing.

        Returns job ids in input order. An identical record already queued, running or
        completed is refused unless ``allow_duplicates``; one that failed or was cancelled
        may be submitted again. ``group_models`` queues jobs that share a checkpoint
        together, to spare the GPU model switches.
        """
        runs = await self.asubmit_runs(
            records, priority, allow_duplicates=allow_duplicates, group_models=group_models
        )
        return [job_id_of(r) for r in runs]

    async def asubmit_runs(
        self,
        records: Iterable[NormalizedJobRecord | dict[str, Any]],
        priority: str = DEFAULT_PRIORITY,
        *,
        allow_duplicates: bool = False,
        group_models: bool = True,
        on_created: Callable[[int], None] | None = None,
        lineage: Mapping[str, Lineage] | None = None,
        scheduled_at: datetime | None = None,
    ) -> list[FlowRun]:
        """:meth:`asubmit`, returning the created flow runs (input order).

        Runs are created ``BULK`` per request in one transaction each, through the embedded
        server's own bulk route (Prefect's, 100 per request, on any other server). With
        ``group_models`` jobs that share a checkpoint are queued together (first-seen model
        first, input order inside each; see :func:`stablenew.ordering.group_by_model`),
        otherwise in input order. Each gets a scheduled time one microsecond after the
        previous (the first at ``scheduled_at``, default now), so FIFO inside a queue follows
        that order exactly.
        """
        prio = check_priority(priority)
        valid = validate_records(records)
        if not valid:
            return []
        submission = uuid.uuid4().hex
        base = scheduled_at or datetime.now(UTC)
        async with prefect_client() as client:
            await check_reachable(client)
            try:
                deployment = await client.read_deployment_by_name(self.deployment_name)
            except ObjectNotFound:
                raise OrchestrationError(
                    f"deployment {self.deployment_name!r} not found; run `stablenew deploy`"
                ) from None
            order = group_by_model(valid) if group_models else list(range(len(valid)))
            batch = Batch(client, deployment.id, prio, submission, base, order, lineage)
            created: dict[int, FlowRun] = {}
            chunk: list[tuple[int, NormalizedJobRecord]] = []
            try:
                for start in range(0, len(order), BULK):
                    chunk = [(i, valid[i]) for i in order[start : start + BULK]]
                    runs = await batch.create_chunk(chunk)
                    for (i, rec), run in zip(chunk, runs, strict=True):
                        if batch.ours(run):
                            created[i] = run
                        else:
                            created[i] = await batch.create_again(i, rec, run, allow_duplicates)
                    if on_created is not None:
                        on_created(len(created))
            except BaseException as error:
                made = list(created.values()) + await batch.find_strays(created)
                await self._rollback(client, made)
                # The server goes on with a request whose answer we gave up on (Ctrl-C): its
                # runs may be committed after that search, and a worker claims them at once.
                late = await batch.find_late_strays(
                    [i for i, _ in chunk if i not in created], {r.id for r in made}
                )
                if late:
                    await self._rollback(client, late)
                    made += late
                rolled_back = [str(r.id) for r in made]
                if isinstance(error, asyncio.CancelledError | KeyboardInterrupt):
                    raise  # Ctrl-C: rolled back, and still a cancellation to the caller
                if isinstance(error, DuplicateJob):
                    raise DuplicateJob(
                        error.job_id, error.existing, rolled_back=rolled_back
                    ) from error
                message = str(error) if isinstance(error, SubmissionError) else repr(error)
                raise SubmissionError(
                    f"submission failed: {message}", rolled_back=rolled_back
                ) from error
        return [created[i] for i in range(len(valid))]

    def submit(
        self,
        records: Iterable[NormalizedJobRecord | dict[str, Any]],
        priority: str = DEFAULT_PRIORITY,
        *,
        allow_duplicates: bool = False,
        group_models: bool = True,
    ) -> list[str]:
        return asyncio.run(
            self.asubmit(
                records, priority, allow_duplicates=allow_duplicates, group_models=group_models
            )
        )

    def run_now(self, records: Iterable[NormalizedJobRecord | dict[str, Any]]) -> list[str]:
        """Submit to the ``urgent`` queue: these run before anything already waiting."""
        return self.submit(records, "urgent")

    async def arerun(
        self,
        job_id: str,
        *,
        seed: Literal["same", "new"] | int = "same",
        priority: str | None = None,
    ) -> FlowRun:
        """Queue a job again: its latest run's record (``seed="same"``), or a record derived
        with a new seed (``"new"``: random; or that number), which is a new job with its own
        id. Lineage (the run re-run, and the parent job for a new seed) goes with the run.
        Priority defaults to the latest run's queue."""
        async with prefect_client() as client:
            parent = await self._latest_run(client, job_id)
        try:
            record = NormalizedJobRecord.model_validate((parent.parameters or {})["record"])
        except (KeyError, ValueError) as e:
            raise SubmissionError(f"flow run {parent.id} holds no valid job record") from e
        if seed != "same":
            value = secrets.randbelow(MAX_SEED + 1) if seed == "new" else seed
            record = derive_with_seed(record, value)
        lineage = Lineage(
            "rerun",
            parent_flow_run_id=str(parent.id),
            parent_job_id=job_id if record.job_id != job_id else None,
        )
        prio = priority or parent.work_queue_name or DEFAULT_PRIORITY
        runs = await self.asubmit_runs(
            [record], prio, allow_duplicates=True, lineage={record.job_id: lineage}
        )
        return runs[0]

    def rerun(
        self,
        job_id: str,
        *,
        seed: Literal["same", "new"] | int = "same",
        priority: str | None = None,
    ) -> str:
        """:meth:`arerun`; returns the job id of the new run (another id for a new seed)."""
        return job_id_of(asyncio.run(self.arerun(job_id, seed=seed, priority=priority)))

    # -- queue control (see queue_control) ---------------------------------------------------

    async def amove(
        self,
        job_id: str,
        *,
        priority: str | None = None,
        front: bool = False,
        after: str | None = None,
    ) -> Replaced:
        """Give a queued job another place: the end of ``priority``'s queue, the ``front`` of
        its queue, or right ``after`` another job. Same job id; a new run (lineage ``move``)
        replaces the old one, which is cancelled only once the new one exists. A job a worker
        claimed meanwhile stays as it was (``done`` False)."""
        async with prefect_client() as client:
            return await queue_control.move(
                self, client, job_id, priority=priority, front=front, after=after
            )

    def move(
        self,
        job_id: str,
        *,
        priority: str | None = None,
        front: bool = False,
        after: str | None = None,
    ) -> Replaced:
        return asyncio.run(self.amove(job_id, priority=priority, front=front, after=after))

    async def aedit(
        self, job_id: str, changes: Mapping[str, Any], *, limits: Limits | None = None
    ) -> Replaced:
        """Replace a queued job by its record with ``changes`` (e.g. ``{"steps": 30}``),
        validated as the builder validates a pack (:class:`PackError` otherwise, nothing
        changed): a new job id whose lineage names this one, in the same place."""
        async with prefect_client() as client:
            return await queue_control.edit(self, client, job_id, changes, limits=limits)

    def edit(
        self, job_id: str, changes: Mapping[str, Any], *, limits: Limits | None = None
    ) -> Replaced:
        return asyncio.run(self.aedit(job_id, changes, limits=limits))

    async def _rollback(self, client: PrefectClient, runs: Sequence[FlowRun]) -> None:
        """Cancel what a failed or interrupted submission created, the way ``cancel`` does:
        a worker may already have claimed a run (it starts fast), and a forced CANCELLED
        would then be overwritten by the run's RUNNING; CANCELLING reaches its worker."""
        try:
            await cancel_matching(
                client, flow_run_ids=[r.id for r in runs], message="submission rolled back"
            )
        except Exception:
            logger.exception("could not roll back %d flow run(s)", len(runs))

    # -- lookup -----------------------------------------------------------------------------

    async def _runs_for_job(self, client: PrefectClient, job_id: str) -> list[FlowRun]:
        keys = [job_id, *(f"{job_id}~{n}" for n in range(1, MAX_RESUBMITS + 1))]
        return await client.read_flow_runs(
            flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=keys)),
            sort=FlowRunSort.START_TIME_DESC,
            limit=len(keys),
        )

    async def _latest_run(self, client: PrefectClient, job_id: str) -> FlowRun:
        runs = await self._runs_for_job(client, job_id)
        if not runs:
            raise JobNotFound(job_id)
        return max(runs, key=lambda r: r.created or datetime.min)

    async def astatus(self, job_id: str) -> JobRef:
        async with prefect_client() as client:
            return job_ref(await self._latest_run(client, job_id))

    def status(self, job_id: str) -> JobRef:
        return asyncio.run(self.astatus(job_id))

    async def _pool_runs(
        self, client: PrefectClient, states: list[StateType], tags: list[str] | None = None
    ) -> list[FlowRun]:
        return await pool_runs(client, self.pool, states, tags)

    async def aqueue_state(self) -> QueueState:
        async with prefect_client() as client:
            return await read_queue_state(client, self.pool)

    def queue_state(self) -> QueueState:
        return asyncio.run(self.aqueue_state())

    # -- control ----------------------------------------------------------------------------

    async def _cancel_run(self, client: PrefectClient, run: FlowRun) -> JobRef:
        state = run.state.type if run.state else None
        if state in ACTIVE:
            # Always CANCELLING, never a forced CANCELLED: ``run`` may be stale, and the
            # server decides on the run as it is now. Still SCHEDULED, it goes straight to
            # CANCELLED (Prefect's rule for runs without infrastructure), so no worker can
            # claim it; claimed or running, the worker sees CANCELLING, interrupts the WebUI
            # if the run holds the GPU, and ends it CANCELLED. A forced CANCELLED could land
            # on a run a worker had just started, which would then render anyway.
            await client.set_flow_run_state(run.id, Cancelling(message="cancel requested"))
        elif state is None:
            await client.set_flow_run_state(
                run.id, Cancelled(message="cancelled while queued"), force=True
            )
        return job_ref(await client.read_flow_run(run.id))

    async def acancel(self, job_id: str) -> JobRef:
        async with prefect_client() as client:
            return await self._cancel_run(client, await self._latest_run(client, job_id))

    def cancel(self, job_id: str) -> JobRef:
        return asyncio.run(self.acancel(job_id))

    async def acancel_pack(self, pack_id: str) -> list[JobRef]:
        """Cancel every active job of the pack in one step (see :mod:`bulk_cancel`): queued
        ones end CANCELLED, claimed or running ones CANCELLING (their worker stops them);
        none starts after this returns: it waits (a few seconds at most) for the workers to
        stop those."""
        async with prefect_client() as client:
            runs = await cancel_matching(client, pool=self.pool, tags=[f"pack:{pack_id}"])
            return [job_ref(r) for r in await settle(client, runs)]

    def cancel_pack(self, pack_id: str) -> list[JobRef]:
        return asyncio.run(self.acancel_pack(pack_id))

    async def acancel_runs(self, flow_run_ids: Sequence[uuid.UUID]) -> list[JobRef]:
        """Cancel these runs where still active (as ``cancel`` does for one job's latest run)."""
        async with prefect_client() as client:
            return [job_ref(r) for r in await cancel_matching(client, flow_run_ids=flow_run_ids)]

    async def arequeue_runs(self, flow_run_ids: Sequence[uuid.UUID], *, reason: str) -> int:
        """Put these runs back in their queue where a worker had claimed or started them
        (their worker is gone); returns how many. Queued and finished runs are left alone."""
        requeued = 0
        async with prefect_client() as client:
            for run in await read_runs_by_id(client, flow_run_ids):
                if run.state_type in (StateType.PENDING, StateType.RUNNING):
                    await client.set_flow_run_state(
                        run.id,
                        Scheduled(scheduled_time=run.expected_start_time, message=reason),
                        force=True,
                    )
                    requeued += 1
        return requeued

    async def acancel_current(self) -> list[JobRef]:
        """Cancel what is generating now: on each worker, the run that holds its GPU (the
        one it started last). Runs a worker has claimed ahead, waiting for the GPU, and runs
        waiting for their WebUI to come back (state ``Waiting for WebUI``) are left alone."""
        async with prefect_client() as client:
            running = await self._pool_runs(client, [StateType.RUNNING])
            return [
                await self._cancel_run(client, r)
                for r in generating(running)
                if r.state_name != WAITING_STATE
            ]

    def cancel_current(self) -> list[JobRef]:
        return asyncio.run(self.acancel_current())

    async def aset_paused(self, paused: bool) -> None:
        async with prefect_client() as client:
            await check_reachable(client)
            await client.update_work_pool(self.pool, WorkPoolUpdate(is_paused=paused))

    def pause(self) -> None:
        """Pause the pool: the running job finishes, nothing new starts."""
        asyncio.run(self.aset_paused(True))

    def resume(self) -> None:
        asyncio.run(self.aset_paused(False))
