"""``stablenew run | up | down | deploy``: the embedded default and applying Prefect objects."""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import typer

from stablenew.cli._output import (
    EXIT_FAILED,
    EXIT_OK,
    KEEP_ORDER_HELP,
    console,
    guarded,
    order_note,
    print_json,
)
from stablenew.errors import StableNewError
from stablenew.orchestration.pool import PRIORITIES, check_priority
from stablenew.settings import Settings, get_settings


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


@contextmanager
def embedded_target(settings: Settings, *, keep: bool, quiet: bool = False) -> Iterator[Target]:
    """Use configured services, a stack left up earlier, or start one on loopback.

    What this call starts is stopped on exit unless ``keep``.
    """
    from stablenew.orchestration.embedded import Stack

    prefect_url = os.environ.get("PREFECT_API_URL")
    webui_url = settings.webui.url
    if prefect_url and webui_url:
        yield Target(prefect_url, webui_url, prefect_url.removesuffix("/api"), [])
        return
    home = settings.home.resolve()
    home.mkdir(parents=True, exist_ok=True)
    existing = Stack.load(home)
    if existing is not None and existing.prefect_url and (prefect_url is None):
        yield Target(existing.prefect_url, existing.webui_url, existing.ui_url, [])
        return
    stack = Stack(home=home)
    stack.prefect_url = prefect_url
    stack.webui_url = webui_url
    try:
        if not quiet:
            console.print(
                f"[dim]Starting the embedded stack on 127.0.0.1 (data in {home})...[/]",
                highlight=False,
            )
        stack.start(prefect=prefect_url is None, simulator=webui_url is None)
        stack.start_worker()
        assert stack.prefect_url is not None
        yield Target(stack.prefect_url, stack.webui_url, stack.ui_url, list(stack.pids))
    finally:
        if keep:
            stack.save()
        else:
            stack.stop()


@contextmanager
def prefect_at(url: str) -> Iterator[None]:
    from prefect.settings import PREFECT_API_URL, temporary_settings

    with temporary_settings(updates={PREFECT_API_URL: url}):
        yield


@contextmanager
def configured_prefect() -> Iterator[str]:
    """PREFECT_API_URL if set, else the stack `stablenew up` left running; else a clear error
    (never Prefect's silent temporary server, which would show an empty queue)."""
    from stablenew.errors import PrefectUnavailable
    from stablenew.orchestration.embedded import Stack

    url = os.environ.get("PREFECT_API_URL")
    if url is None:
        stack = Stack.load(get_settings().home.resolve())
        url = stack.prefect_url if stack is not None else None
    if url is None:
        raise PrefectUnavailable(
            "(none)", "set PREFECT_API_URL, or start the embedded stack with `stablenew up`"
        )
    with prefect_at(url):
        yield url


async def _sync_history(settings: Settings) -> str | None:
    """Export what just ran; a history failure is reported, never fails the run."""
    from stablenew.history import open_store
    from stablenew.orchestration._prefect import prefect_client
    from stablenew.orchestration.exporter import safe_sync

    try:
        with open_store(settings.resolved_history_url) as store:
            async with prefect_client() as client:
                stats = await safe_sync(client, store, output_root=settings.resolved_output_root)
    except StableNewError as e:
        console.print(f"[yellow]history not updated[/]: {e}", highlight=False)
        return None
    return settings.resolved_history_url if stats is not None else None


async def _apply(pool: str) -> dict[str, Any]:
    from stablenew.orchestration._prefect import check_reachable, prefect_client
    from stablenew.orchestration.deployments import apply

    async with prefect_client() as client:
        await check_reachable(client)
        ids = await apply(client, gpu_pool=pool)
    return {name: str(i) for name, i in ids.items()}


@guarded
def run(
    pack: Path = typer.Argument(..., exists=False, help="Pack YAML to render."),
    priority: str = typer.Option(
        "normal", "--priority", "-p", help=f"Queue: {', '.join(PRIORITIES)}."
    ),
    keep: bool = typer.Option(False, "--keep", help="Leave the embedded stack running."),
    timeout: float = typer.Option(None, "--timeout", help="Give up waiting after N seconds."),
    keep_order: bool = typer.Option(False, "--keep-order", help=KEEP_ORDER_HELP),
    json_out: bool = typer.Option(False, "--json", help="Print one JSON summary, nothing else."),
) -> None:
    """Build PACK, queue every job, watch them render, and summarize.

    With no PREFECT_API_URL / STABLENEW_WEBUI__URL it starts a local Prefect server, the
    WebUI simulator and one worker on loopback, and stops them afterwards.
    """
    from stablenew.builder import build_jobs
    from stablenew.cli._progress import watch_jobs
    from stablenew.orchestration.jobs import JobService
    from stablenew.packs import load_pack

    prio = check_priority(priority)
    settings = get_settings()
    # Build first: a bad pack starts nothing and queues nothing.
    records = list(build_jobs(load_pack(pack), generation_defaults=settings.generation))
    with (
        embedded_target(settings, keep=keep, quiet=json_out) as target,
        prefect_at(target.prefect_url),
    ):

        async def go() -> dict[str, Any]:
            await _apply(settings.work_pool)
            service = JobService(pool=settings.work_pool)
            # `run` means "render this now": an identical earlier run does not block it.
            runs = await service.asubmit_runs(
                records, prio, allow_duplicates=True, group_models=not keep_order
            )
            if not json_out:
                console.print(
                    f"Queued [bold]{len(runs)}[/] job(s) from [bold]{records[0].pack_id}[/] "
                    f"at priority {prio}.{order_note(records, keep_order)} "
                    f"Prefect UI: {target.ui_url}",
                    highlight=False,
                )
            summary = await watch_jobs(
                runs, webui_url=target.webui_url, timeout=timeout, quiet=json_out
            )
            summary["history"] = await _sync_history(settings)
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
        if summary.get("history"):
            console.print(
                f"History: {summary['history']} (`stablenew history ls`, `stablenew explain ID`)",
                highlight=False,
            )
        if keep and target.started:
            console.print(
                f"Stack left running (Prefect UI {target.ui_url}); stop it with `stablenew down`.",
                highlight=False,
            )
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
        "webui": target.webui_url,
        "started": target.started,
    }
    if json_out:
        print_json(info)
        return
    console.print(
        f"Prefect UI {target.ui_url}\nWebUI {target.webui_url}\n"
        f"Use it from another shell with: export PREFECT_API_URL={target.prefect_url}",
        highlight=False,
    )


@guarded
def down() -> None:
    """Stop the embedded stack started by `up` or `run --keep`."""
    from stablenew.orchestration.embedded import Stack

    home = get_settings().home.resolve()
    stack = Stack.load(home)
    if stack is None:
        console.print("Nothing running.")
        return
    stopped = stack.stop()
    console.print(f"Stopped: {', '.join(stopped) or 'nothing'}")


@guarded
def deploy(
    json_out: bool = typer.Option(False, "--json", help="Print deployment ids as JSON."),
) -> None:
    """Apply prefect.yaml: work pools, priority queues and deployments (idempotent)."""
    ids = asyncio.run(_apply(get_settings().work_pool))
    if json_out:
        print_json(ids)
        return
    for name, ident in ids.items():
        console.print(f"deployment {name}: {ident}", highlight=False)
