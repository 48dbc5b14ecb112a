"""``stablenew run | up | down | deploy``: the embedded default and applying Prefect objects."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer

from stablenew.cli._output import (
    EXIT_FAILED,
    EXIT_INTERRUPTED,
    EXIT_OK,
    KEEP_ORDER_HELP,
    console,
    guarded,
    order_note,
    print_json,
)
from stablenew.cli._pack_arg import PACK_HELP, pack_argument
from stablenew.errors import StableNewError
from stablenew.orchestration.services.pool import PRIORITIES, check_priority
from stablenew.redact import redact_url
from stablenew.settings import Settings, get_settings

if TYPE_CHECKING:
    from prefect.client.schemas.objects import FlowRun

    from stablenew.orchestration.server.embedded import Stack


def register(root: typer.Typer) -> None:
    root.command("run")(run)
    root.command("up")(up)
    root.command("down")(down)
    root.command("deploy")(deploy)


@dataclass
class Target:
    """Where a command sends its work: a Prefect API and (for our worker) a WebUI."""

    prefect_url: str
    webui_url: str | None
    ui_url: str | None
    started: list[str]
    stack: Stack | None = None  # the embedded stack serving it, if one does


@contextmanager
def embedded_target(settings: Settings, *, keep: bool, quiet: bool = False) -> Iterator[Target]:
    """The Prefect server every command would find (see ``locate``) with a worker serving it,
    or, when there is none, an embedded stack started on loopback.

    A configured Prefect without a configured WebUI gets the simulator and a worker. What
    this call starts is stopped on exit unless ``keep``.
    """
    from stablenew.errors import PrefectUnavailable
    from stablenew.orchestration.server.embedded import Stack
    from stablenew.orchestration.server.locate import (
        explicit_api_url,
        forget_located,
        locate_prefect,
    )

    home = settings.home
    home.mkdir(parents=True, exist_ok=True)
    try:
        found = locate_prefect(home)
    except PrefectUnavailable:
        if explicit_api_url() or Stack.load(home) is not None:
            raise  # something is configured or running but does not answer: say so
        found = None
    if found is not None and found.stack is not None:
        running = found.stack
        yield Target(found.api_url, running.webui_url, found.ui_url, [], running)
        return
    webui_url = settings.webui.url
    if found is not None and webui_url:
        yield Target(found.api_url, webui_url, found.ui_url, [])
        return
    # A stack may already be recorded for another Prefect (PREFECT_API_URL points elsewhere):
    # this one then runs beside it without touching its state file.
    stack = Stack(home=home, owns_state=Stack.load(home) is None)
    stack.prefect_url = found.api_url if found is not None else None
    stack.webui_url = webui_url
    try:
        if not quiet:
            console.print(
                f"[dim]Starting the embedded stack on 127.0.0.1 (data in {home})...[/]",
                highlight=False,
            )
        stack.start(prefect=found is None, simulator=webui_url is None)
        stack.start_worker()
        stack.start_gallery()
        forget_located()
        assert stack.prefect_url is not None
        ui = stack.ui_url
        yield Target(stack.prefect_url, stack.webui_url, ui, list(stack.pids), stack)
    finally:
        if keep:
            stack.save()
        else:
            stack.stop()
        forget_located()


@contextmanager
def prefect_at(url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@contextmanager
def configured_prefect() -> Iterator[str]:
    """The Prefect server every entry point uses (``locate``), else a clear error; never
    Prefect's silent temporary server, which would show an empty queue."""
    from stablenew.orchestration.server.locate import locate_prefect

    url = locate_prefect(get_settings().home).api_url
    with prefect_at(url):
        yield url


async def sync_history(settings: Settings) -> str | None:
    """Export what just ran; a history failure is reported, never fails the run."""
    from stablenew.history import open_store
    from stablenew.orchestration._prefect import prefect_client
    from stablenew.orchestration.services.exporter import safe_sync

    try:
        with open_store(settings.resolved_history_url) as store:
            async with prefect_client() as client:
                stats = await safe_sync(client, store, output_root=settings.resolved_output_root)
    except StableNewError as e:
        console.print(f"[yellow]history not updated[/]: {e}", highlight=False)
        return None
    return settings.resolved_history_url if stats is not None else None


async def record_submitted(settings: Settings, runs: Sequence[FlowRun]) -> None:
    """Put runs just created into the history at once, so `explain` and `history` know them
    before the next sync; a history failure is reported, never fails the submission."""
    from stablenew.history import open_store
    from stablenew.orchestration._prefect import prefect_client
    from stablenew.orchestration.services.exporter import record_runs

    try:
        with open_store(settings.resolved_history_url) as store:
            async with prefect_client() as client:
                await record_runs(client, store, list(runs), settings.resolved_output_root)
    except StableNewError as e:
        console.print(f"[yellow]history not updated[/]: {e}", highlight=False)


async def _apply(pool: str) -> dict[str, Any]:
    from stablenew.orchestration._prefect import check_reachable, prefect_client
    from stablenew.orchestration.services.deployments import apply

    async with prefect_client() as client:
        await check_reachable(client)
        ids = await apply(client, gpu_pool=pool)
    return {name: str(i) for name, i in ids.items()}


@guarded
def run(
    pack: Path = typer.Argument(..., help=PACK_HELP, callback=pack_argument),
    priority: str = typer.Option(
        "normal", "--priority", "-p", help=f"Queue: {', '.join(PRIORITIES)}."
    ),
    keep: bool = typer.Option(False, "--keep", help="Leave the embedded stack running."),
    keep_queued: bool = typer.Option(
        False,
        "--keep-queued",
        help="On Ctrl-C, keep the pack's unfinished jobs queued instead of cancelling them.",
    ),
    timeout: float = typer.Option(None, "--timeout", help="Give up waiting after N seconds."),
    keep_order: bool = typer.Option(False, "--keep-order", help=KEEP_ORDER_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary, nothing else."),
) -> None:
    """Build PACK, queue every job, watch them render, and summarize.

    With no PREFECT_API_URL / STABLENEW_WEBUI__URL and no stack running (`stablenew up`), it
    starts a local Prefect server, the WebUI simulator and one worker on loopback, and stops
    them afterwards. Ctrl-C cancels the pack's unfinished jobs (--keep-queued keeps them).
    """
    from stablenew.builder import build_jobs
    from stablenew.cli._names import check_pack_names
    from stablenew.cli._progress import watch_jobs
    from stablenew.cli._views import PackViews
    from stablenew.orchestration.services.jobs import JobService
    from stablenew.packs import load_pack

    prio = check_priority(priority)
    settings = get_settings()
    # Build first: a bad pack starts nothing and queues nothing.
    loaded = load_pack(pack)
    records = list(build_jobs(loaded, generation_defaults=settings.generation))
    with (
        embedded_target(settings, keep=keep, quiet=json_out) as target,
        prefect_at(target.prefect_url),
    ):
        check_pack_names(loaded, records, target.webui_url)

        async def go() -> dict[str, Any]:
            await _apply(settings.work_pool)
            service = JobService(pool=settings.work_pool)
            # `run` means "render this now": an identical earlier run does not block it.
            try:
                runs = await service.asubmit_runs(
                    records, prio, allow_duplicates=True, group_models=not keep_order
                )
            except asyncio.CancelledError:  # Ctrl-C while queueing: the submission rolled back
                from stablenew.cli._interrupt import say_interrupted

                say_interrupted(
                    "cancelling this run's jobs while they were being queued: none stays "
                    "queued, one already generating is interrupted.",
                    quiet=json_out,
                )
                raise typer.Exit(EXIT_INTERRUPTED) from None
            if not json_out:
                console.print(
                    f"Queued [bold]{len(runs)}[/] job(s) from [bold]{records[0].pack_id}[/] "
                    f"at priority {prio}.{order_note(records, keep_order)} "
                    f"Prefect UI: {target.ui_url}",
                    highlight=False,
                )
            sheets = PackViews(settings, loaded, len(records))
            try:
                # Within the try: a Ctrl-C while the empty contact sheets are drawn is the
                # same Ctrl-C as one a second later (CI's first job generated by then).
                await sheets.refresh(0)
                summary = await watch_jobs(
                    runs,
                    webui_url=target.webui_url,
                    timeout=timeout,
                    quiet=json_out,
                    on_finished=sheets.refresh,
                )
            except asyncio.CancelledError:  # Ctrl-C: asyncio.run cancels this task
                from stablenew.cli._interrupt import settle_after_interrupt

                summary = await settle_after_interrupt(
                    service, runs, target, keep_queued=keep_queued, quiet=json_out
                )
            summary["history"] = await sync_history(settings)
            summary["gallery"] = await sheets.finish()
            return summary

        summary = asyncio.run(go())
    out_dir = settings.resolved_output_root.resolve() / records[0].pack_id
    summary.update(
        output_dir=str(out_dir),
        prefect_ui=target.ui_url if keep or not target.started else None,
        stack_left_running=keep and bool(target.started),
    )
    if json_out:
        print_json(summary)
    else:
        console.print(f"Images: [bold]{out_dir}[/]", highlight=False)
        if summary.get("gallery"):
            console.print(f"Gallery: {summary['gallery']}", highlight=False)
        if summary.get("history"):
            console.print(
                f"History: {summary['history'].removeprefix('sqlite:///')} "
                "(`stablenew history ls`, `stablenew explain ID`)",
                highlight=False,
            )
        if keep and target.started:
            console.print(
                f"Stack left running (Prefect UI {target.ui_url}); stop it with `stablenew down`.",
                highlight=False,
            )
    if summary.get("interrupted"):
        raise typer.Exit(EXIT_INTERRUPTED)
    ok = summary["counts"].get("completed", 0) == summary["total"]
    raise typer.Exit(EXIT_OK if ok else EXIT_FAILED)


@guarded
def up(
    json_out: bool = typer.Option(False, "--json", help="Print URLs as JSON."),
) -> None:
    """Start the embedded stack (Prefect server, simulator, worker) and leave it running."""
    settings = get_settings()
    with (
        embedded_target(settings, keep=True, quiet=json_out) as target,
        prefect_at(target.prefect_url),
    ):
        asyncio.run(_apply(settings.work_pool))
    info = {
        "prefect_api": target.prefect_url,
        "prefect_ui": target.ui_url,
        "webui": redact_url(target.webui_url) if target.webui_url else None,
        "started": target.started,
    }
    if json_out:
        print_json(info)
        return
    already = "" if target.started else "Already running. "
    console.print(
        f"{already}Prefect UI {target.ui_url}\nWebUI {info['webui']}\n"
        f"Data in {settings.home}. Every `stablenew` command and the SDK find this stack by "
        f"themselves; for Prefect's own tools: export PREFECT_API_URL={target.prefect_url}\n"
        "Stop it with `stablenew down`.",
        highlight=False,
    )


@guarded
def down() -> None:
    """Stop the embedded stack of this data dir: what `up` or `run --keep` started, and any
    other process started for it (found even when its state file is gone)."""
    from stablenew.orchestration.server.embedded import Stack

    home = get_settings().home
    stack = Stack.load(home) or Stack(home=home)
    stopped = stack.stop(strays=True)
    console.print(f"Stopped: {', '.join(stopped)}" if stopped else "Nothing running.")


@guarded
def deploy(
    json_out: bool = typer.Option(False, "--json", help="Print deployment ids as JSON."),
) -> None:
    """Apply prefect.yaml: work pools, priority queues and deployments (idempotent), on the
    server PREFECT_API_URL names or the running embedded stack."""
    with configured_prefect() as url:
        ids = asyncio.run(_apply(get_settings().work_pool))
    if json_out:
        print_json(ids)
        return
    console.print(f"Applied to the Prefect server at {url}:", highlight=False)
    for name, ident in ids.items():
        console.print(f"deployment {name}: {ident}", highlight=False)
