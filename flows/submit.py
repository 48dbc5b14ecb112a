"""Flow ``submit-pack``: build a pack's jobs and queue them all (from the UI or a schedule)."""

from __future__ import annotations

from prefect import flow, get_run_logger

from flows.tasks import build_jobs_task
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.pool import Priority
from stablenew.settings import get_settings


@flow(name="submit-pack", persist_result=False)
async def submit_pack(
    pack_path: str,
    priority: Priority = "normal",
    allow_duplicates: bool = False,
    keep_order: bool = False,
) -> list[str]:
    """Validate and build ``pack_path`` (relative to the project), then submit every job.

    All-or-nothing: a pack with errors, or a failed submission, queues nothing. Jobs that
    share a checkpoint are queued together unless ``keep_order``.
    """
    records = build_jobs_task(pack_path)
    job_ids = await JobService(pool=get_settings().work_pool).asubmit(
        records, priority, allow_duplicates=allow_duplicates, group_models=not keep_order
    )
    get_run_logger().info("Queued %d job(s) from %s at %s", len(job_ids), pack_path, priority)
    return job_ids
