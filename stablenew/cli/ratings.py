"""``stablenew rate | fav | learn``: judge jobs, and see which slot values and settings work."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import typer
from rich import box
from rich.table import Table

from stablenew.cli._output import console, guarded, print_json
from stablenew.cli.history import rating_text

if TYPE_CHECKING:
    from stablenew.history.learn import LearnReport, ValueStats
    from stablenew.orchestration.services.history_service import JobHistoryService

JOB_HELP = "Job id, or any unique start of it."


def register(root: typer.Typer) -> None:
    root.command("rate")(rate)
    root.command("fav")(fav)
    root.command("learn")(learn)


def _service(store: Any) -> JobHistoryService:
    from stablenew.orchestration.services.history_service import JobHistoryService

    return JobHistoryService(store)


def _print_rating(rating: Any, json_out: bool) -> None:
    if json_out:
        print_json(rating.model_dump(mode="json"))
        return
    shown = rating_text(rating.stars, rating.favourite) or "not rated, not a favourite"
    note = f" - {rating.note}" if rating.note else ""
    console.print(f"{rating.job_id}: {shown}{note}", highlight=False, markup=False)


@guarded
def rate(
    job_id: str = typer.Argument(..., help=JOB_HELP),
    stars: int = typer.Argument(..., min=1, max=5, help="1 (poor) .. 5 (keep)."),
    note: str = typer.Option(None, "--note", help="Why; replaces an earlier note."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Rate a job's images 1..5 (its latest run); rating again replaces the stars."""
    from stablenew.cli.history import _store

    with _store() as store:
        rating = _service(store).rate(job_id, stars, note=note)
    _print_rating(rating, json_out)


@guarded
def fav(
    job_id: str = typer.Argument(..., help=JOB_HELP),
    off: bool = typer.Option(False, "--off", help="Unmark instead of toggling."),
    on: bool = typer.Option(False, "--on", help="Mark instead of toggling."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Toggle a job as a favourite (``--on`` / ``--off`` to set it either way)."""
    from stablenew.cli._output import EXIT_BAD_INPUT, fail
    from stablenew.cli.history import _store

    if on and off:
        fail("give --on or --off, not both", EXIT_BAD_INPUT)
    with _store() as store:
        rating = _service(store).favourite(job_id, True if on else False if off else None)
    _print_rating(rating, json_out)


@guarded
def learn(
    pack: str = typer.Argument(..., help="Pack id (as in `history ls --pack`)."),
    min_ratings: int = typer.Option(
        3, "--min-ratings", min=1, help="Ratings a value needs before its mean counts."
    ),
    top: int = typer.Option(10, "--top", min=1, help="Combinations shown."),
    json_out: bool = typer.Option(False, "--json"),
) -> None:
    """Which matrix slot values and settings give the images you rate best: per value that
    varied across the pack's rated jobs, mean stars, ratings and favourites, best first."""
    from stablenew.cli.history import _current_store

    with _current_store() as store:
        report = _service(store).learn(pack, min_ratings=min_ratings)
    if json_out:
        print_json(report.model_dump(mode="json"))
        return
    _print_report(report, top)


def _stats_cells(v: ValueStats) -> list[str]:
    mean = f"{v.mean:.2f}" if v.mean is not None else "-"
    return [mean, str(v.ratings), str(v.favourites), "" if v.enough else "too few"]


def _print_report(report: LearnReport, top: int) -> None:
    console.print(
        f"[bold]{report.pack}[/]: {report.rated} rated job(s), {report.favourites} favourite(s)",
        highlight=False,
    )
    for dim in report.dimensions:
        table = Table(title=dim.name, box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False)
        table.add_column("value", overflow="fold")
        for name in ("mean", "ratings", "favs"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
        for v in dim.values:
            table.add_row(v.value, *_stats_cells(v))
        console.print(table)
    if report.combinations and report.dimensions:
        table = Table(
            title="best combinations", box=box.SIMPLE_HEAD, collapse_padding=True, pad_edge=False
        )
        for dim in report.dimensions:
            table.add_column(dim.name, overflow="fold")
        for name in ("mean", "ratings", "favs"):
            table.add_column(name, justify="right", no_wrap=True)
        table.add_column("", no_wrap=True)
        for combo in report.combinations[:top]:
            table.add_row(*(combo.values[d.name] for d in report.dimensions), *_stats_cells(combo))
        console.print(table)
    for note in report.notes:
        console.print(f"[yellow]note[/]: {note}", highlight=False)
