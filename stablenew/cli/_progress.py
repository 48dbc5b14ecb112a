"""Live progress for a set of submitted jobs: an overall bar, a bar for the running job
(sampling steps from the WebUI), then a summary table."""

from __future__ import annotations

from collections import Counter
from collections.abc import Awaitable, Callable, Sequence
from typing import Any

import httpx
from prefect.client.schemas.objects import FlowRun
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)
from rich.table import Table

from stablenew.cli._output import console
from stablenew.lifecycle import JobStatus
from stablenew.orchestration.services.monitor import follow
from stablenew.orchestration.services.queue_view import JobRef


async def _webui_steps(client: httpx.AsyncClient, webui_url: str) -> tuple[int, int] | None:
    try:
        resp = await client.get(f"{webui_url}/sdapi/v1/progress?skip_current_image=true")
        state = resp.json().get("state", {}) if resp.status_code == 200 else {}
    except (httpx.HTTPError, ValueError):
        return None
    steps = int(state.get("sampling_steps") or 0)
    return (int(state.get("sampling_step") or 0), steps) if steps else None


def summarize(refs: Sequence[JobRef], total: int) -> dict[str, Any]:
    counts = Counter(ref.status.value for ref in refs)
    problems = [
        {"job_id": r.job_id, "name": r.name, "status": r.status.value, "message": r.message}
        for r in refs
        if r.status in (JobStatus.FAILED, JobStatus.CANCELLED)
    ]
    return {"total": total, "counts": dict(counts), "problems": problems}


async def watch_jobs(
    runs: Sequence[FlowRun],
    *,
    webui_url: str | None,
    timeout: float | None,
    quiet: bool = False,
    on_finished: Callable[[int], Awaitable[None]] | None = None,
) -> dict[str, Any]:
    """Show progress until every run is terminal (or ``timeout``); ``on_finished`` is awaited
    with the count of finished runs whenever it grows."""
    total = len(runs)
    seen_finished = 0
    latest: dict[str, JobRef] = {}
    progress = Progress(
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
        console=console,
        disable=quiet,
        transient=False,
    )
    async with httpx.AsyncClient(timeout=2.0) as http:
        with progress:
            overall = progress.add_task("jobs", total=total)
            current = progress.add_task("waiting for the worker", total=None)
            async for snapshot in follow([r.id for r in runs], timeout=timeout):
                latest = snapshot
                finished = sum(1 for ref in snapshot.values() if ref.status.is_terminal)
                progress.update(overall, completed=finished)
                if on_finished is not None and finished > seen_finished:
                    seen_finished = finished
                    await on_finished(finished)
                running = [r for r in snapshot.values() if r.status == JobStatus.RUNNING]
                if running:
                    steps = await _webui_steps(http, webui_url) if webui_url else None
                    label = f"running {running[0].name}"
                    if steps:
                        progress.update(
                            current, description=label, completed=steps[0], total=steps[1]
                        )
                    else:
                        progress.update(current, description=label, total=None)
                elif finished == total:
                    progress.update(current, description="done", completed=1, total=1)
            progress.update(
                overall, completed=sum(1 for r in latest.values() if r.status.is_terminal)
            )
    summary = summarize(list(latest.values()), total)
    if not quiet:
        table = Table(title="Summary")
        for column in ("completed", "failed", "cancelled", "still active"):
            table.add_column(column, justify="right")
        active = total - sum(
            summary["counts"].get(k, 0) for k in ("completed", "failed", "cancelled")
        )
        table.add_row(
            str(summary["counts"].get("completed", 0)),
            str(summary["counts"].get("failed", 0)),
            str(summary["counts"].get("cancelled", 0)),
            str(active),
        )
        console.print(table)
        for problem in summary["problems"]:
            console.print(
                f"[red]{problem['status']}[/] {problem['name']} ({problem['job_id']}): "
                f"{problem['message']}",
                highlight=False,
            )
    return summary
