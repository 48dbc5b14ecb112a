"""``stablenew submit | queue | cancel``: talk to the Prefect server in PREFECT_API_URL."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich.table import Table

from stablenew.cli._output import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    KEEP_ORDER_HELP,
    console,
    fail,
    guarded,
    order_note,
    print_json,
)
from stablenew.orchestration.pool import PRIORITIES, check_priority
from stablenew.settings import get_settings

P = ParamSpec("P")
R = TypeVar("R")

queue_app = typer.Typer(help="Show, pause or resume the GPU queue.", invoke_without_command=True)


def register(root: typer.Typer) -> None:
    root.command("submit")(submit)
    root.command("cancel")(cancel)
    root.add_typer(queue_app, name="queue")


def _service() -> Any:
    from stablenew.orchestration.jobs import JobService

    return JobService(pool=get_settings().work_pool)


def with_prefect(fn: Callable[P, R]) -> Callable[P, R]:
    """Run the command against the configured Prefect API (see ``configured_prefect``)."""

    @functools.wraps(fn)
    def wrapper(*args: P.args, **kwargs: P.kwargs) -> R:
        from stablenew.cli.stack import configured_prefect

        with configured_prefect():
            return fn(*args, **kwargs)

    return wrapper


@guarded
@with_prefect
def submit(
    pack: Path = typer.Argument(..., help="Pack YAML to submit."),
    priority: str = typer.Option(
        "normal", "--priority", "-p", help=f"One of {', '.join(PRIORITIES)}."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for every job to finish."),
    allow_duplicates: bool = typer.Option(
        False, "--allow-duplicates", help="Queue jobs again even if identical ones exist."
    ),
    keep_order: bool = typer.Option(False, "--keep-order", help=KEEP_ORDER_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print job ids as JSON."),
) -> None:
    """Build PACK and queue its jobs (all or nothing). Needs PREFECT_API_URL or `stablenew up`."""
    from stablenew.builder import build_jobs
    from stablenew.packs import load_pack

    prio = check_priority(priority)
    records = list(build_jobs(load_pack(pack), generation_defaults=get_settings().generation))

    async def go() -> tuple[list[str], dict[str, Any] | None]:
        runs = await _service().asubmit_runs(
            records, prio, allow_duplicates=allow_duplicates, group_models=not keep_order
        )
        ids = [r.idempotency_key.split("~")[0] for r in runs]
        if not wait:
            return ids, None
        from stablenew.cli._progress import watch_jobs

        return ids, await watch_jobs(runs, webui_url=None, timeout=None, quiet=json_out)

    ids, summary = asyncio.run(go())
    if json_out:
        print_json({"job_ids": ids, "priority": prio, "summary": summary})
    else:
        console.print(
            f"Queued {len(ids)} job(s) at priority {prio}.{order_note(records, keep_order)}",
            highlight=False,
        )
    if summary is not None and summary["counts"].get("completed", 0) != summary["total"]:
        raise typer.Exit(EXIT_FAILED)


@guarded
@with_prefect
def cancel(
    job_id: str = typer.Argument(None, help="Job id to cancel."),
    pack: str = typer.Option(None, "--pack", help="Cancel every active job of this pack."),
    current: bool = typer.Option(False, "--current", help="Cancel the running job(s)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Cancel a job, a pack's jobs, or what is running. Queued jobs never start."""
    chosen = [x for x in (job_id, pack, current or None) if x]
    if len(chosen) != 1:
        fail("give exactly one of JOB_ID, --pack ID, --current", EXIT_BAD_INPUT)
    service = _service()
    if job_id:
        refs = [service.cancel(job_id)]
    elif pack:
        refs = service.cancel_pack(pack)
    else:
        refs = service.cancel_current()
    if json_out:
        print_json([r.model_dump(mode="json") for r in refs])
        return
    if not refs:
        console.print("Nothing to cancel.")
    for ref in refs:
        console.print(f"{ref.job_id}: {ref.status.value}", highlight=False)


def _print_queue(state: Any) -> None:
    console.print(
        f"Pool [bold]{state.pool}[/]: [bold]{state.status}[/] - "
        f"{len(state.running)} running, {len(state.pending)} pending",
        highlight=False,
    )
    for hold in state.holds:
        console.print(f"[yellow]holding[/] {hold}", highlight=False)
    table = Table()
    for column in ("#", "state", "priority", "job", "job id"):
        table.add_column(column)
    for ref in state.running:
        table.add_row("", ref.status.value, ref.priority or "", ref.name, ref.job_id)
    for i, ref in enumerate(state.pending[:50], 1):
        table.add_row(str(i), ref.status.value, ref.priority or "", ref.name, ref.job_id)
    if state.running or state.pending:
        console.print(table)
    if len(state.pending) > 50:
        console.print(f"... and {len(state.pending) - 50} more pending")


@queue_app.callback()
def queue(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """Pending jobs (in the order they will run) and running jobs."""
    if ctx.invoked_subcommand is None:
        ls(json_out)


@queue_app.command("ls")
@guarded
@with_prefect
def ls(json_out: bool = typer.Option(False, "--json")) -> None:
    """Pending jobs (in run order) and running jobs."""
    state = _service().queue_state()
    if json_out:
        print_json(state.model_dump(mode="json"))
    else:
        _print_queue(state)


@queue_app.command("pause")
@guarded
@with_prefect
def pause() -> None:
    """Pause the pool: the running job finishes, nothing new starts."""
    _service().pause()
    console.print("Paused.")


@queue_app.command("resume")
@guarded
@with_prefect
def resume() -> None:
    """Resume the pool."""
    _service().resume()
    console.print("Resumed.")
    raise typer.Exit(EXIT_OK)
