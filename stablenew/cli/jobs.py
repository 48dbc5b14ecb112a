"""``stablenew submit | queue | cancel``: talk to the Prefect server in PREFECT_API_URL."""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable
from pathlib import Path
from typing import Any, ParamSpec, TypeVar

import typer
from rich import box
from rich.table import Table

from stablenew.cli._output import (
    EXIT_BAD_INPUT,
    EXIT_FAILED,
    EXIT_OK,
    KEEP_ORDER_HELP,
    console,
    err_console,
    fail,
    guarded,
    order_note,
    print_json,
)
from stablenew.cli._pack_arg import PACK_HELP, pack_argument
from stablenew.orchestration.services.pool import PRIORITIES, check_priority
from stablenew.redact import redact_text
from stablenew.settings import get_settings

P = ParamSpec("P")
R = TypeVar("R")

queue_app = typer.Typer(
    help="Show, pause, resume or reorder the GPU queue; edit a queued job.",
    invoke_without_command=True,
)


def register(root: typer.Typer) -> None:
    root.command("submit")(submit)
    root.command("cancel")(cancel)
    root.command("rerun")(rerun)
    root.add_typer(queue_app, name="queue")


def _service() -> Any:
    from stablenew.orchestration.services.jobs import JobService

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
    pack: Path = typer.Argument(..., help=PACK_HELP, callback=pack_argument),
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
    from stablenew.cli._names import check_pack_names
    from stablenew.orchestration.server.locate import cached_prefect
    from stablenew.packs import load_pack

    prio = check_priority(priority)
    settings = get_settings()
    loaded = load_pack(pack)
    records = list(build_jobs(loaded, generation_defaults=settings.generation))
    # The WebUI that will render them, where one is known: configured, or the stack's.
    stack = cached_prefect(settings.home).stack
    check_pack_names(loaded, records, settings.webui.url or (stack.webui_url if stack else None))

    from stablenew.cli.stack import record_submitted

    async def go() -> tuple[list[str], dict[str, Any] | None]:
        runs = await _service().asubmit_runs(
            records, prio, allow_duplicates=allow_duplicates, group_models=not keep_order
        )
        await record_submitted(settings, runs)
        ids = [r.idempotency_key.split("~")[0] for r in runs]
        if not json_out:
            console.print(
                f"Queued {len(ids)} job(s) at priority {prio}.{order_note(records, keep_order)}",
                highlight=False,
            )
        if not wait:
            return ids, None
        from stablenew.cli._progress import watch_jobs
        from stablenew.cli.stack import sync_history

        summary = await watch_jobs(runs, webui_url=None, timeout=None, quiet=json_out)
        summary["history"] = await sync_history(settings)  # `explain` finds them at once
        return ids, summary

    ids, summary = asyncio.run(go())
    if json_out:
        print_json({"job_ids": ids, "priority": prio, "summary": summary})
    if summary is not None and summary["counts"].get("completed", 0) != summary["total"]:
        raise typer.Exit(EXIT_FAILED)


@guarded
@with_prefect
def cancel(
    job_id: str = typer.Argument(None, help="Job id to cancel, or any unique start of it."),
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
        refs = [service.cancel(_full_job_id(job_id))]
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


@guarded
@with_prefect
def rerun(
    job_id: str = typer.Argument(..., help="Job id to run again, or any unique start of it."),
    seed: str = typer.Option(
        "same", "--seed", help="same (the record as it was), new (a random seed), or a number."
    ),
    priority: str = typer.Option(
        None, "--priority", "-p", help="Queue; defaults to the one the job last ran in."
    ),
    wait: bool = typer.Option(False, "--wait", help="Wait for the new run to finish."),
    json_out: bool = typer.Option(False, "--json", help="Print the new run as JSON."),
) -> None:
    """Queue a job again as a new run. A new seed makes a new job (its own id) whose lineage
    names this one; earlier runs and their images are kept."""
    choice: Any
    if seed in ("same", "new"):
        choice = seed
    elif seed.isdigit():
        choice = int(seed)
    else:
        fail(f"--seed must be same, new or a number, not {seed!r}", EXIT_BAD_INPUT)
    prio = check_priority(priority) if priority else None
    full = _full_job_id(job_id)

    from stablenew.cli.stack import record_submitted

    async def go() -> tuple[Any, dict[str, Any] | None]:
        from stablenew.orchestration.services.queue_view import job_ref

        run = await _service().arerun(full, seed=choice, priority=prio)
        await record_submitted(get_settings(), [run])
        if not json_out:
            ref = job_ref(run)
            console.print(
                f"Queued {ref.job_id} at priority {ref.priority} (run {ref.flow_run_id}, "
                f"re-run of {full}).",
                highlight=False,
            )
        if not wait:
            return run, None
        from stablenew.cli._progress import watch_jobs
        from stablenew.cli.stack import sync_history

        summary = await watch_jobs([run], webui_url=None, timeout=None, quiet=json_out)
        summary["history"] = await sync_history(get_settings())
        return run, summary

    run, summary = asyncio.run(go())
    if json_out:
        from stablenew.orchestration.services.queue_view import job_ref

        print_json({"run": job_ref(run).model_dump(mode="json"), "parent_job_id": full,
                    "summary": summary})  # fmt: skip
    if summary is not None and summary["counts"].get("completed", 0) != summary["total"]:
        raise typer.Exit(EXIT_FAILED)


def _full_job_id(text: str) -> str:
    """The id of the one recorded job that ``text`` is or starts; else ``text`` itself, taken
    as a full id (the history may not know a job submitted since it last synced)."""
    from stablenew.errors import HistoryError, JobNotFound
    from stablenew.history import AmbiguousJobId, open_store

    try:
        with open_store(get_settings().resolved_history_url) as store:
            return store.resolve_job_id(text)
    except AmbiguousJobId:
        raise
    except (JobNotFound, HistoryError):
        return text


def _print_queue(state: Any) -> None:
    console.print(
        f"Pool [bold]{state.pool}[/]: [bold]{state.status}[/] - "
        f"{len(state.generating)} generating, {len(state.staged)} staged, "
        f"{len(state.pending)} pending",
        highlight=False,
    )
    for hold in state.holds:
        console.print(f"[yellow]holding[/] {redact_text(hold)}", highlight=False)
    if not (state.generating or state.staged or state.pending):
        return
    # Full job ids, never cut: they are what `cancel` and `explain` take.
    table = Table(box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("#", justify="right", no_wrap=True)
    table.add_column("state", no_wrap=True)
    table.add_column("priority", no_wrap=True)
    table.add_column("job", overflow="fold")
    shown = [*state.generating, *state.staged, *state.pending[:50]]
    id_width = max(len(ref.job_id) for ref in shown)
    table.add_column("job id", no_wrap=True, min_width=id_width, overflow="fold")
    for ref in state.generating:
        table.add_row("", "generating", ref.priority or "", ref.name, ref.job_id)
    # Numbered in the order they will get the GPU: staged ones first.
    waiting = [("staged", ref) for ref in state.staged]
    waiting += [(ref.status.value, ref) for ref in state.pending[:50]]
    for i, (label, ref) in enumerate(waiting, 1):
        table.add_row(str(i), label, ref.priority or "", ref.name, ref.job_id)
    console.print(table)
    if len(state.pending) > 50:
        console.print(f"... and {len(state.pending) - 50} more pending")


@queue_app.callback()
def queue(ctx: typer.Context, json_out: bool = typer.Option(False, "--json")) -> None:
    """Jobs generating, staged (claimed, waiting for the GPU) and pending, in run order."""
    if ctx.invoked_subcommand is None:
        ls(json_out)


@queue_app.command("ls")
@guarded
@with_prefect
def ls(json_out: bool = typer.Option(False, "--json")) -> None:
    """Jobs generating, staged (claimed, waiting for the GPU) and pending, in run order."""
    state = _service().queue_state()
    if json_out:
        state.holds = [redact_text(h) for h in state.holds]  # a worker's own words
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


def _print_replaced(result: Any, json_out: bool) -> None:
    if json_out:
        print_json(result.model_dump(mode="json"))
    elif result.done:
        console.print(result.message, highlight=False)
    else:
        err_console.print(f"[yellow]not changed[/]: {result.message}", highlight=False)


@queue_app.command("move")
@guarded
@with_prefect
def move(
    job_id: str = typer.Argument(..., help="Queued job to move, or any unique start of it."),
    priority: str = typer.Option(
        None, "--priority", "-p", help=f"To the end of this queue: {', '.join(PRIORITIES)}."
    ),
    front: bool = typer.Option(
        False, "--front", help="To the front of its queue (of --priority's, with it)."
    ),
    after: str = typer.Option(None, "--after", help="Right after this job, in its queue."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Move a queued job: same job id, a new run in the new place, the old run cancelled once
    the new one exists. A job a worker has claimed meanwhile stays as it is (exit 1)."""
    if not (priority or front or after) or (after and (priority or front)):
        fail("give --priority P, --front (with or without --priority), or --after ID", 2)
    prio = check_priority(priority) if priority else None
    result = _service().move(
        _full_job_id(job_id),
        priority=prio,
        front=front,
        after=_full_job_id(after) if after else None,
    )
    _print_replaced(result, json_out)
    if not result.done:
        raise typer.Exit(EXIT_FAILED)


@queue_app.command("edit")
@guarded
@with_prefect
def edit(
    job_id: str = typer.Argument(..., help="Queued job to edit, or any unique start of it."),
    assignments: list[str] = typer.Option(
        ..., "--set", help="key=value, e.g. steps=30 or sampler='DPM++ 2M' (repeatable)."
    ),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Edit a queued job's settings. Checked as the builder checks a pack (same messages and
    limits); the edited job has a new id naming the old one as parent and takes its place.
    Running or finished jobs cannot be edited (exit 2)."""
    from stablenew.orchestration.services.record_edit import parse_assignments

    changes = parse_assignments(assignments)
    full = _full_job_id(job_id)
    result = _service().edit(full, changes, limits=_pack_limits(full))
    _print_replaced(result, json_out)
    if not result.done:
        raise typer.Exit(EXIT_FAILED)


def _pack_limits(job_id: str) -> Any:
    """The limits of the job's pack where a pack of that name is found; else the defaults."""
    from stablenew.cli._pack_arg import known_packs
    from stablenew.errors import PackError
    from stablenew.packs import load_pack
    from stablenew.packs.model import Limits

    pack_id = _service().status(job_id).pack_id
    path = known_packs().get(pack_id or "")
    if path is None:
        return Limits()
    try:
        return load_pack(path).spec.limits
    except PackError:
        return Limits()
