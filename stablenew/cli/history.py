"""``stablenew history ...`` and ``stablenew explain``: the durable job history."""

from __future__ import annotations

import asyncio
import re
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table

from stablenew.cli._output import EXIT_BAD_INPUT, console, fail, guarded, print_json
from stablenew.cli.jobs import with_prefect
from stablenew.history import SqliteHistoryStore, open_store
from stablenew.settings import get_settings

if TYPE_CHECKING:
    from stablenew.orchestration.services.history_service import JobView, RunView

history_app = typer.Typer(help="The job history: list, show, export, sync, prune.")

_AGE = re.compile(r"^(\d+)([smhdw])$")
_UNITS = {"s": "seconds", "m": "minutes", "h": "hours", "d": "days", "w": "weeks"}


def register(root: typer.Typer) -> None:
    root.add_typer(history_app, name="history")
    root.command("explain")(explain)


def _store() -> SqliteHistoryStore:
    return open_store(get_settings().resolved_history_url)


@contextmanager
def _current_store() -> Iterator[SqliteHistoryStore]:
    """The store, brought up to date from Prefect first where a server is reachable."""
    from stablenew.orchestration.services.history_service import JobHistoryService

    with _store() as store:
        JobHistoryService(store).refresh()
        yield store


def parse_age(text: str) -> timedelta:
    match = _AGE.match(text.strip())
    if not match:
        fail(f"expected an age like 30d, 12h or 90m, got {text!r}", EXIT_BAD_INPUT)
    return timedelta(**{_UNITS[match.group(2)]: int(match.group(1))})


def _when(text: str | None) -> datetime | None:
    """An ISO timestamp, or an age ('2h' = two hours ago)."""
    if text is None:
        return None
    if _AGE.match(text.strip()):
        return datetime.now(UTC) - parse_age(text)
    try:
        return datetime.fromisoformat(text)
    except ValueError:
        fail(f"expected an ISO time or an age like 2h, got {text!r}", EXIT_BAD_INPUT)


def _filters(
    status: list[str] | None,
    pack: str | None,
    model: str | None,
    since: str | None,
    until: str | None,
    text: str | None,
    rated: bool = False,
    fav: bool = False,
) -> dict[str, Any]:
    found: dict[str, Any] = {
        "status": status or None,
        "pack": pack,
        "model": model,
        "since": _when(since),
        "until": _when(until),
        "text": text,
        "rated": rated or None,
        "favourite": fav or None,
    }
    return {k: v for k, v in found.items() if v is not None}


StatusOpt = typer.Option(None, "--status", "-s", help="queued, running, completed, failed, ...")
PackOpt = typer.Option(None, "--pack", help="Pack id.")
ModelOpt = typer.Option(None, "--model", help="Model name.")
SinceOpt = typer.Option(None, "--since", help="ISO time or age (e.g. 2h).")
UntilOpt = typer.Option(None, "--until", help="ISO time or age.")
TextOpt = typer.Option(None, "--text", help="Substring of the prompt.")
RatedOpt = typer.Option(False, "--rated", help="Only jobs rated with stars.")
FavOpt = typer.Option(False, "--fav", help="Only favourites.")


@history_app.command("ls")
@guarded
def ls(
    status: list[str] = StatusOpt,
    pack: str = PackOpt,
    model: str = ModelOpt,
    since: str = SinceOpt,
    until: str = UntilOpt,
    text: str = TextOpt,
    rated: bool = RatedOpt,
    fav: bool = FavOpt,
    limit: int = typer.Option(50, "--limit", min=1, max=1000),
    offset: int = typer.Option(0, "--offset", min=0),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Recent jobs, newest first, filtered and paged."""
    from stablenew.orchestration.services.history_service import view_from_row

    with _current_store() as store:
        filters = _filters(status, pack, model, since, until, text, rated, fav)
        page = store.list_jobs(limit=limit, offset=offset, **filters)
        total = store.count(**filters)
        ratings = store.ratings(r.job_id for r in page.items)
    views = [view_from_row(r, ratings.get(r.job_id)) for r in page.items]
    if json_out:
        print_json({"total": total, "jobs": [v.model_dump(mode="json") for v in views]})
        return
    console.print(_jobs_table(views, title=f"{len(views)} of {total} job(s)"))


# Columns shown only from this terminal width up: the job name repeats the id without its
# hash, the size is in ``history show``; below it they would squeeze the rest into slivers.
_SHOWN_FROM = {"job": 120, "size": 100}


def _jobs_table(views: list[JobView], *, title: str) -> Table:
    """Full job ids, never cut (they are what ``explain`` and ``cancel`` take); the other
    columns fold or give way to fit the terminal."""
    table = Table(title=title, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    id_width = max((len(v.job_id) for v in views), default=0)
    shown = {name for name, width in _SHOWN_FROM.items() if console.width >= width}
    table.add_column("job id", no_wrap=True, min_width=id_width, overflow="fold")
    table.add_column("status", no_wrap=True, min_width=10)
    table.add_column("created", overflow="fold", min_width=10)  # folds to date / time
    if "job" in shown:
        table.add_column("job", overflow="fold")
    table.add_column("model", overflow="fold")
    if "size" in shown:
        table.add_column("size", no_wrap=True)
    table.add_column("seconds", no_wrap=True, justify="right")
    rated = any(v.stars or v.favourite for v in views)
    if rated:
        table.add_column("rating", no_wrap=True)
    for v in views:
        table.add_row(
            v.job_id,
            v.status.value,
            v.created_at.strftime("%Y-%m-%d %H:%M:%S") if v.created_at else "",
            *([v.name] if "job" in shown else []),
            v.model or "",
            *([v.size or ""] if "size" in shown else []),
            f"{v.duration_s:.2f}" if v.duration_s is not None else "",
            *([rating_text(v.stars, v.favourite)] if rated else []),
        )
    return table


def rating_text(stars: int | None, favourite: bool) -> str:
    """'4/5 fav', '3/5', 'fav' or ''."""
    parts = [f"{stars}/5"] if stars else []
    if favourite:
        parts.append("fav")
    return " ".join(parts)


@history_app.command("show")
@guarded
def show(
    job_id: str = typer.Argument(..., help="Job id."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """One job: status, times, summary, outputs, last error, and each of its runs."""
    from stablenew.orchestration.services.history_service import JobHistoryService

    with _store() as store:
        detail = JobHistoryService(store).get(job_id)
    if json_out:
        print_json(detail.model_dump(mode="json"))
        return
    for key, value in detail.model_dump(mode="json", exclude={"runs"}).items():
        console.print(f"[bold]{key}[/]: {value}", highlight=False)
    if detail.runs:
        console.print(_runs_table(detail.runs))


def _seconds(value: float | None) -> str:
    return f"{value:.2f}" if value is not None else ""


def _origin(run: RunView) -> str:
    """Why the run exists and what it repeats: 'rerun of run 1', 'rerun of <job id>'."""
    parent = ""
    if run.parent_run is not None:
        parent = f"run {run.parent_run}"
    elif run.parent_job_id is not None:
        parent = run.parent_job_id
    elif run.parent_flow_run_id is not None:
        parent = f"flow run {run.parent_flow_run_id}"
    reason = run.reason or ""
    if parent:
        return f"{reason or 'rerun'} of {parent}"
    return reason


def _runs_table(runs: list[RunView]) -> Table:
    """Each run on one line (oldest first); the error folds into the last column."""
    table = Table(title="runs", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
    table.add_column("run", justify="right", no_wrap=True)
    table.add_column("status", no_wrap=True)
    table.add_column("created", overflow="fold", min_width=10)
    table.add_column("seconds", justify="right", no_wrap=True)
    table.add_column("tries", justify="right", no_wrap=True)
    table.add_column("worker", overflow="fold")
    table.add_column("why", overflow="fold")
    table.add_column("images", justify="right", no_wrap=True)
    table.add_column("error", overflow="fold")
    for r in runs:
        table.add_row(
            str(r.number),
            r.status.value,
            r.created_at.strftime("%Y-%m-%d %H:%M:%S"),
            _seconds(r.duration_s),
            str(r.attempts),
            r.worker or "",
            _origin(r),
            str(len(r.outputs)),
            r.error or "",
        )
    return table


@guarded
def explain(
    job_id: str = typer.Argument(..., help="Job id."),
    run: int = typer.Option(None, "--run", min=1, help="Run number (default: the latest)."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Everything about a job: record, prompt provenance, the timeline of one run, its other
    runs, and the exact WebUI request."""
    from stablenew.orchestration.services.history_service import JobHistoryService

    with _store() as store:
        info = JobHistoryService(store).explain(job_id, run=run)
    if json_out:
        print_json(info.model_dump(mode="json"))
        return
    console.print(f"[bold]{info.job.name}[/] ({info.job.job_id}): {info.job.status.value}")
    if info.job.stars or info.job.favourite:
        note = f" - {info.job.rating_note}" if info.job.rating_note else ""
        console.print(
            f"rating: {rating_text(info.job.stars, info.job.favourite)}{note}",
            highlight=False,
            markup=False,
        )
    if info.run is not None:
        chosen = info.run
        why = _origin(chosen)
        took = f"{chosen.duration_s:.2f} s, " if chosen.duration_s is not None else ""
        console.print(
            f"run {chosen.number} of {len(info.runs)}: {chosen.status.value}, {took}"
            f"attempt(s) {chosen.attempts}{f', {why}' if why else ''} "
            f"(flow run {chosen.flow_run_id})",
            highlight=False,
            markup=False,
        )
    console.rule("provenance")
    for key, value in info.provenance.items():
        console.print(f"{key}: {value}", highlight=False, markup=False)
    console.rule(f"timeline of run {info.run.number}" if info.run else "timeline")
    for step in info.timeline:
        took = f" (+{step.seconds_in_previous:.2f}s)" if step.seconds_in_previous else ""
        attempt = f" (attempt {step.attempt})" if step.attempt and step.attempt > 1 else ""
        flag = "" if step.legal else "  [red]illegal transition[/]"
        console.print(
            f"{step.at.isoformat()}  {step.status.value}{attempt}{took}{flag}", highlight=False
        )
    others = [r for r in info.runs if info.run is None or r.number != info.run.number]
    if others:
        console.rule("other runs")
        for r in others:
            took = f"{r.duration_s:.2f} s, " if r.duration_s is not None else ""
            console.print(
                f"run {r.number}: {r.status.value}, {took}"
                f"created {r.created_at.strftime('%Y-%m-%d %H:%M:%S')}",
                highlight=False,
                markup=False,
            )
        console.print(
            f"(stablenew explain {info.job.job_id} --run N shows another run)",
            highlight=False,
            markup=False,
        )
    console.rule("WebUI requests")
    for call in info.webui_requests:
        console.print_json(data=call)
    if info.error:
        console.rule("error")
        console.print(info.error, markup=False, highlight=False)


@history_app.command("export")
@guarded
def export(
    fmt: str = typer.Option("csv", "--format", help="csv or jsonl."),
    out: Path = typer.Option(None, "--out", help="File to write (stdout if omitted)."),
    status: list[str] = StatusOpt,
    pack: str = PackOpt,
    model: str = ModelOpt,
    since: str = SinceOpt,
    until: str = UntilOpt,
    text: str = TextOpt,
    rated: bool = RatedOpt,
    fav: bool = FavOpt,
) -> None:
    """Stream the history (filtered) as CSV or JSONL, ratings included; memory stays flat."""
    if fmt not in ("csv", "jsonl"):
        fail(f"--format must be csv or jsonl, got {fmt!r}", EXIT_BAD_INPUT)
    filters = _filters(status, pack, model, since, until, text, rated, fav)
    with _current_store() as store:
        n = store.export(fmt, out if out is not None else sys.stdout, **filters)  # type: ignore[arg-type]
    if out is not None:
        console.print(f"Wrote {n} job(s) to {out}", highlight=False)


@history_app.command("sync")
@guarded
@with_prefect
def sync(json_out: bool = typer.Option(False, "--json")) -> None:
    """Copy new runs and state changes from Prefect into the history (incremental)."""
    from stablenew.orchestration._prefect import check_reachable, prefect_client
    from stablenew.orchestration.services.exporter import sync as run_sync

    settings = get_settings()

    async def go() -> Any:
        async with prefect_client() as client:
            await check_reachable(client)
            with _store() as store:
                return await run_sync(client, store, output_root=settings.resolved_output_root)

    stats = asyncio.run(go())
    if json_out:
        print_json(vars(stats))
    else:
        console.print(
            f"Read {stats.runs_read} run(s): {stats.jobs_added} new job(s), "
            f"{stats.transitions_added} new transition(s).",
            highlight=False,
        )


@history_app.command("prune")
@guarded
def prune(
    older_than: str = typer.Option(None, "--older-than", help="Age, e.g. 30d."),
    keep_last: int = typer.Option(None, "--keep-last", min=0, help="Keep the newest N."),
) -> None:
    """Delete finished jobs (with their runs and transitions) by age and/or count."""
    if older_than is None and keep_last is None:
        fail("give --older-than and/or --keep-last", EXIT_BAD_INPUT)
    with _store() as store:
        n = store.prune(
            older_than=parse_age(older_than) if older_than else None, keep_last=keep_last
        )
    console.print(f"Pruned {n} job(s).")
