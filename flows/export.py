"""Flow ``export-history``: Prefect runs → the history table, plus a recent-jobs artifact."""

from __future__ import annotations

from typing import Any

from prefect import flow, get_run_logger
from prefect.artifacts import acreate_table_artifact

from stablenew.history import open_store
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services.exporter import safe_sync
from stablenew.settings import get_settings


@flow(name="export-history", persist_result=False)
async def export_history(recent: int = 50) -> dict[str, Any]:
    """Sync the history store incrementally and publish the ``recent`` newest jobs."""
    settings = get_settings()
    with open_store(settings.resolved_history_url) as store:
        async with prefect_client() as client:
            stats = await safe_sync(client, store, output_root=settings.resolved_output_root)
        rows = [
            {
                "job": r.record().run_name,
                "status": r.status.value,
                "model": r.model,
                "created": r.created_at.isoformat(),
                "seconds": r.duration_s,
                "error": (r.error or "")[:200],
                "job_id": r.job_id,
            }
            for r in store.list_jobs(limit=recent).items
        ]
    await acreate_table_artifact(
        key="stablenew-recent-jobs", table=rows, description="Most recent StableNew jobs"
    )
    result = vars(stats) if stats is not None else {"error": "history store unavailable"}
    get_run_logger().info("History sync: %s", result)
    return result
