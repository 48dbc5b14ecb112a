"""Jobs as Prefect sees them: a run read as a :class:`JobRef`, and the queue view
(:class:`QueueState`: what generates, what is staged, what waits, and holds)."""

from __future__ import annotations

from collections.abc import Iterable
from datetime import UTC, datetime

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterState,
    FlowRunFilterStateType,
    FlowRunFilterTags,
    WorkPoolFilter,
    WorkPoolFilterName,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.client.schemas.sorting import FlowRunSort
from pydantic import BaseModel, Field

from stablenew.lifecycle import JobStatus, status_from_prefect
from stablenew.orchestration._prefect import PAGE, check_reachable
from stablenew.orchestration.services.deployments import RENDER_DEPLOYMENT
from stablenew.orchestration.services.pool import PRIORITIES, QUEUE_PRIORITY, WORKER_TYPE
from stablenew.orchestration.worker.worker_state import read_published

ACTIVE = [StateType.SCHEDULED, StateType.PENDING, StateType.PAUSED, StateType.RUNNING]
QUEUED = [StateType.SCHEDULED, StateType.PAUSED]
CLAIMED = [StateType.PENDING, StateType.RUNNING]


class JobRef(BaseModel):
    """A job as Prefect currently sees it."""

    job_id: str
    flow_run_id: str
    name: str
    status: JobStatus
    state_name: str | None = None
    priority: str | None = None
    pack_id: str | None = None
    created: datetime | None = None
    expected_start: datetime | None = None
    message: str | None = None


class QueueState(BaseModel):
    """The pool as the GPU sees it: what generates, what a worker has claimed and stages
    (RUNNING or PENDING in Prefect, waiting for its GPU), what is still queued."""

    status: str = Field(
        description="paused | running (a job generates) | starting (jobs claimed, none "
        "generating yet) | idle"
    )
    pool: str
    generating: list[JobRef] = Field(
        default_factory=list, description="Jobs a GPU is generating for now (one per worker)."
    )
    staged: list[JobRef] = Field(
        default_factory=list,
        description="Claimed by a worker and waiting for its GPU, in the order they get it.",
    )
    pending: list[JobRef] = Field(
        default_factory=list, description="Queued, in the order they will run after those."
    )
    holds: list[str] = Field(
        default_factory=list,
        description="Online workers not taking jobs, and why (e.g. WebUI down).",
    )

    @property
    def running(self) -> list[JobRef]:
        """Every job Prefect reports RUNNING, generating or staged (what ``running`` listed
        before the two were told apart)."""
        return [r for r in (*self.generating, *self.staged) if r.status == JobStatus.RUNNING]


def job_id_of(run: FlowRun) -> str:
    key = run.idempotency_key or ""
    return key.split("~", 1)[0] or str(run.id)


def _tag_value(run: FlowRun, prefix: str) -> str | None:
    for tag in run.tags:
        if tag.startswith(prefix):
            return tag[len(prefix) :]
    return None


def generating(running: Iterable[FlowRun]) -> list[FlowRun]:
    """The RUNNING runs their GPUs generate for. A run of ours turns RUNNING when it gets its
    worker's GPU, which it lets go of as soon as its last image arrives, so a worker may
    show two for a moment: the one started last generates, the other writes what it made.
    Under Prefect's stock process worker (no GPU gate, nothing staged) every RUNNING run
    generates."""
    latest: dict[str, FlowRun] = {}
    chosen: list[FlowRun] = []
    for run in running:
        labels = run.labels or {}
        worker = labels.get("prefect.worker.name")
        if labels.get("prefect.worker.type") != WORKER_TYPE or worker is None:
            chosen.append(run)
            continue
        other = latest.get(str(worker))
        if other is None or _started(run) > _started(other):
            latest[str(worker)] = run
    return chosen + list(latest.values())


def _started(run: FlowRun) -> datetime:
    """When the run last turned RUNNING (server time)."""
    return run.state.timestamp if run.state else datetime.min.replace(tzinfo=UTC)


def job_ref(run: FlowRun) -> JobRef:
    state_type = run.state.type.value if run.state else None
    return JobRef(
        job_id=job_id_of(run),
        flow_run_id=str(run.id),
        name=run.name,
        status=status_from_prefect(state_type),
        state_name=run.state.name if run.state else None,
        priority=run.work_queue_name,
        pack_id=_tag_value(run, "pack:"),
        created=run.created,
        expected_start=run.expected_start_time,
        message=run.state.message if run.state else None,
    )


async def pool_runs(
    client: PrefectClient, pool: str, states: list[StateType], tags: list[str] | None = None
) -> list[FlowRun]:
    """The pool's ``render-job`` runs in these states (all pages), by expected start."""
    runs: list[FlowRun] = []
    flt = FlowRunFilter(
        state=FlowRunFilterState(type=FlowRunFilterStateType(any_=states)),
        tags=FlowRunFilterTags(all_=tags) if tags else None,
    )
    while True:
        page = await client.read_flow_runs(
            flow_run_filter=flt,
            work_pool_filter=WorkPoolFilter(name=WorkPoolFilterName(any_=[pool])),
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[RENDER_DEPLOYMENT])),
            sort=FlowRunSort.EXPECTED_START_TIME_ASC,
            limit=PAGE,
            offset=len(runs),
        )
        runs.extend(page)
        if len(page) < PAGE:
            return runs


async def read_queue_state(client: PrefectClient, pool_name: str) -> QueueState:
    """What generates, what is staged and what waits, in the order they will run."""
    await check_reachable(client)
    pool = await client.read_work_pool(pool_name)
    queues = await client.read_work_queues(work_pool_name=pool_name)
    runs = await pool_runs(client, pool_name, ACTIVE)
    holds = (await read_published(client, pool_name)).holds
    rank: dict[str, int] = {name: QUEUE_PRIORITY.get(name, 99) for name in PRIORITIES}

    def in_run_order(selected: Iterable[FlowRun]) -> list[JobRef]:
        return sorted(
            map(job_ref, selected),
            key=lambda j: (rank.get(j.priority or "", 99), j.expected_start or datetime.min),
        )

    at_gpu = generating(r for r in runs if r.state_type == StateType.RUNNING)
    at_gpu_ids = {r.id for r in at_gpu}
    staged = [r for r in runs if r.state_type in CLAIMED and r.id not in at_gpu_ids]
    paused = pool.is_paused or (bool(queues) and all(q.is_paused for q in queues))
    status = "paused" if paused else "running" if at_gpu else "starting" if staged else "idle"
    return QueueState(
        status=status,
        pool=pool_name,
        generating=in_run_order(at_gpu),
        staged=in_run_order(staged),
        pending=in_run_order(r for r in runs if r.state_type in QUEUED),
        holds=holds,
    )
