"""Prefect → history store: incremental, idempotent export of ``render-job`` runs.

Prefect's API cannot filter runs by "updated since", so a sync reads two bounded sets:

1. runs whose expected start is at or after the watermark (minus an overlap window): the jobs
   submitted since the last sync;
2. every job the store still holds as not finished whose run has left SCHEDULED, re-read by
   flow-run id: this is how RUNNING, CANCELLING and the terminal states (CRASHED,
   cancelled-while-queued included) reach the history without state hooks.

Status events are derived from each run's timestamps and current state and written through
the store's unique (job, status, time) index, so running a sync twice adds nothing. A run
that went back to its queue (its worker stopped or died) or waited for its WebUI says so in
its tags; for those, and for runs Prefect ran more than once, the run's state history is
read too, so every requeue, wait and attempt is a transition with its reason. A store
failure is logged and left for the next sync: it never touches a job.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from uuid import UUID

from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.filters import (
    DeploymentFilter,
    DeploymentFilterName,
    FlowRunFilter,
    FlowRunFilterExpectedStartTime,
    FlowRunFilterIdempotencyKey,
)
from prefect.client.schemas.objects import FlowRun, State, StateType
from prefect.client.schemas.sorting import FlowRunSort

from stablenew.errors import HistoryError
from stablenew.history import SqliteHistoryStore, StatusEvent, Submission, WriteStats
from stablenew.lifecycle import JobStatus, status_from_prefect
from stablenew.orchestration._prefect import PAGE, read_runs_by_id
from stablenew.orchestration.services.deployments import RENDER_DEPLOYMENT
from stablenew.orchestration.services.submission import MAX_RESUBMITS, Lineage
from stablenew.orchestration.services.tags import NOTEWORTHY
from stablenew.outputs import run_dirs
from stablenew.records import NormalizedJobRecord

logger = logging.getLogger(__name__)

WATERMARK = "prefect-expected-start"
# Runs are scheduled at submission time, so new ones are never far behind the newest seen;
# the overlap only covers submissions that interleave with a sync.
OVERLAP = timedelta(minutes=2)


@dataclass
class SyncStats:
    runs_read: int = 0
    jobs_added: int = 0
    transitions_added: int = 0
    skipped: int = 0  # runs without a StableNew record (not ours)

    def add(self, written: WriteStats) -> None:
        self.jobs_added += written.jobs_added
        self.transitions_added += written.transitions_added


def _record_of(run: FlowRun) -> NormalizedJobRecord | None:
    raw = (run.parameters or {}).get("record")
    if raw is None:
        return None
    try:
        return NormalizedJobRecord.model_validate(raw)
    except ValueError:
        return None


def _outputs(
    record: NormalizedJobRecord, flow_run_id: str, output_root: Path | None
) -> tuple[str, ...] | None:
    """The images of this run's latest attempt (each attempt writes its own folder)."""
    if output_root is None:
        return None
    folders = run_dirs(output_root, record, flow_run_id)
    if not folders:
        return None
    return tuple(str(p) for p in sorted(folders[-1].glob("*.png"))) or None


def events_for(
    run: FlowRun,
    record: NormalizedJobRecord,
    output_root: Path | None = None,
    *,
    attempt_start: datetime | None = None,
    states: list[State] | None = None,
) -> list[StatusEvent]:
    """The status events of this run (one flow run of the job) that its timestamps and
    current state imply, oldest first. A run Prefect retries (its UI's Retry, or a retry
    policy) shows as a new attempt of the same run. With the run's ``states`` (oldest
    first), also every requeue and wait between them, each with its message."""
    common = {"job_id": record.job_id, "flow_run_id": str(run.id), "source": "exporter"}
    worker = (run.labels or {}).get("prefect.worker.name")
    if states:
        starts = [st.timestamp for st in states if st.type == StateType.RUNNING]
        attempt_start = attempt_start or (max(starts) if starts else None)
    tries = max(run.run_count, 1)
    events = [
        StatusEvent(
            status=JobStatus.QUEUED, at=run.created or datetime.now(UTC), attempt=1, **common
        )
    ]
    # Prefect also stamps start_time on runs cancelled while queued; run_count is only
    # raised by entering RUNNING. start_time is the first attempt's start.
    if run.start_time is not None and run.run_count > 0:
        events.append(
            StatusEvent(
                status=JobStatus.RUNNING, at=run.start_time, worker=worker, attempt=1, **common
            )
        )
    state = run.state
    if state is None:
        return events
    status = status_from_prefect(state.type.value)
    if status is JobStatus.QUEUED:
        if run.run_count > 0:  # waiting to run again: the next attempt is queued
            events.append(
                StatusEvent(status=status, at=state.timestamp, attempt=run.run_count + 1, **common)
            )
        return events
    if run.run_count > 1:  # a later attempt: when it started, if Prefect told us
        started = attempt_start or (state.timestamp if status is JobStatus.RUNNING else None)
        if started is not None:
            events.append(
                StatusEvent(
                    status=JobStatus.RUNNING, at=started, worker=worker, attempt=tries, **common
                )
            )
    if status is JobStatus.RUNNING:
        return events
    at = (run.end_time if status.is_terminal else None) or state.timestamp
    failed = status in (JobStatus.FAILED, JobStatus.CANCELLED)
    events.append(
        StatusEvent(
            status=status,
            at=at,
            error=state.message if status == JobStatus.FAILED else None,
            message=f"{state.name}: {state.message}" if failed and state.message else state.name,
            worker=worker,
            outputs=(
                _outputs(record, str(run.id), output_root)
                if status == JobStatus.COMPLETED
                else None
            ),
            attempt=tries,
            **common,
        )
    )
    if states:
        events.extend(_noted(states, common))
    return events


def _noted(states: list[State], common: dict[str, str]) -> list[StatusEvent]:
    """The requeues and waits in a run's state history: a SCHEDULED state after the first
    (the run went back to its queue: after it ran, its next attempt waits there) and a
    RUNNING-type state with a message (e.g. waiting for the WebUI, and back)."""
    noted: list[StatusEvent] = []
    attempts, running = 0, False  # entries into RUNNING so far, as Prefect counts attempts
    for i, st in enumerate(states):
        if st.type == StateType.RUNNING:
            if not running:
                attempts += 1
            running = True
            if st.message:
                noted.append(
                    StatusEvent(
                        status=JobStatus.RUNNING,
                        at=st.timestamp,
                        message=f"{st.name}: {st.message}",
                        attempt=attempts,
                        **common,
                    )
                )
            continue
        running = False
        if st.type == StateType.SCHEDULED and i and (attempts or st.message):
            noted.append(
                StatusEvent(
                    status=JobStatus.QUEUED,
                    at=st.timestamp,
                    message=st.message or st.name,
                    attempt=attempts + 1,
                    **common,
                )
            )
    return noted


def submission_of(run: FlowRun, record: NormalizedJobRecord) -> Submission:
    """The run as the history records its creation: which job, why, and whose re-run."""
    lineage = Lineage.of(run)
    return Submission(
        record=record,
        flow_run_id=str(run.id),
        priority=run.work_queue_name,
        at=run.created,
        reason=lineage.reason,
        parent_flow_run_id=lineage.parent_flow_run_id,
        parent_job_id=lineage.parent_job_id,
    )


async def _new_runs(client: PrefectClient, since: datetime | None) -> list[FlowRun]:
    runs: list[FlowRun] = []
    flt = FlowRunFilter(
        expected_start_time=FlowRunFilterExpectedStartTime(after_=since) if since else None
    )
    while True:
        page = await client.read_flow_runs(
            flow_run_filter=flt,
            deployment_filter=DeploymentFilter(name=DeploymentFilterName(any_=[RENDER_DEPLOYMENT])),
            # A unique sort key: paging by offset over tied times (many runs share one, or
            # none) returned some runs twice and skipped others.
            sort=FlowRunSort.ID_DESC,
            limit=PAGE,
            offset=len(runs),
        )
        runs.extend(page)
        if len(page) < PAGE:
            return runs


async def sync(
    client: PrefectClient, store: SqliteHistoryStore, *, output_root: Path | None = None
) -> SyncStats:
    """One incremental pass; safe to run concurrently with jobs and repeatedly."""
    mark = store.get_watermark(WATERMARK)
    since = datetime.fromisoformat(mark) - OVERLAP if mark else None
    runs = {r.id: r for r in await _new_runs(client, since)}
    # Every run not finished yet, not only each job's latest: an older run may still be open.
    open_ids = [i for i in store.open_flow_run_ids() if UUID(i) not in runs]
    for run in await read_runs_by_id(client, open_ids, left_scheduled=True):
        runs[run.id] = run
    stats = await record_runs(client, store, list(runs.values()), output_root)
    # Never past now: a run scheduled for later would otherwise move the watermark ahead of
    # every run created (or retried) meanwhile, and the next syncs would skip them.
    now = datetime.now(UTC)
    newest = max(
        (min(r.expected_start_time, now) for r in runs.values() if r.expected_start_time),
        default=since,
    )
    if newest is not None and (since is None or newest > since):
        store.set_watermark(newest.isoformat(), WATERMARK)
    return stats


async def sync_job(
    client: PrefectClient,
    store: SqliteHistoryStore,
    job_id: str,
    *,
    output_root: Path | None = None,
) -> SyncStats:
    """Bring one job's runs up to date (one request): what a reader of that job does first."""
    keys = [job_id, *(f"{job_id}~{n}" for n in range(1, MAX_RESUBMITS + 1))]
    runs = await client.read_flow_runs(
        flow_run_filter=FlowRunFilter(idempotency_key=FlowRunFilterIdempotencyKey(any_=keys)),
        limit=len(keys),
    )
    return await record_runs(client, store, runs, output_root)


async def _states(client: PrefectClient, run: FlowRun) -> list[State] | None:
    """The run's state history, oldest first, where it holds more than its timestamps say:
    runs Prefect ran more than once (when did this attempt start?) and runs tagged as having
    gone back to their queue or waited."""
    if run.run_count < 2 and not NOTEWORTHY & set(run.tags or ()):
        return None
    states = await client.read_flow_run_states(run.id)
    return sorted(states, key=lambda st: st.timestamp)


async def record_runs(
    client: PrefectClient,
    store: SqliteHistoryStore,
    runs: list[FlowRun],
    output_root: Path | None,
) -> SyncStats:
    """Write these runs (as read from Prefect) into the history: their creation and every
    status their state implies. Also what ``submit`` calls on the runs it just created."""
    stats = SyncStats(runs_read=len(runs))
    submissions: list[Submission] = []
    events: list[StatusEvent] = []
    for run in runs:
        record = _record_of(run)
        if record is None:
            stats.skipped += 1
            continue
        submissions.append(submission_of(run, record))
        events.extend(events_for(run, record, output_root, states=await _states(client, run)))
    stats.add(store.record_many(submissions, events))
    return stats


async def safe_sync(
    client: PrefectClient, store: SqliteHistoryStore, *, output_root: Path | None = None
) -> SyncStats | None:
    """:func:`sync`, but a store failure is logged (and retried by the next sync)."""
    try:
        return await sync(client, store, output_root=output_root)
    except HistoryError as e:
        logger.warning("history sync failed, will retry next time: %s", e)
        return None
