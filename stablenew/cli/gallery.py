"""``stablenew grid PACK`` and ``stablenew gallery [PACK] [--serve]``: look at what packs made.

Both read only the output folders (and, for statuses, the history file when there is one):
no Prefect server or WebUI is needed. ``--serve`` serves the output root read-only on
127.0.0.1 until Ctrl-C.
"""

from __future__ import annotations

import contextlib
import sys
import webbrowser
from pathlib import Path
from typing import Any

import typer

from stablenew.cli._output import EXIT_BAD_INPUT, console, fail, guarded, print_json
from stablenew.gallery import (
    GridError,
    PendingJob,
    build_sheets,
    list_packs,
    pack_axes,
    refresh_pack,
    serving,
    write_index,
)
from stablenew.gallery.sheet import stored_axes
from stablenew.settings import Settings, get_settings

JsonOpt = typer.Option(False, "--json", help="Machine output: one JSON document on stdout.")


def register(root: typer.Typer) -> None:
    root.command("grid")(grid)
    root.command("gallery")(gallery)


def _pack_and_id(pack: str) -> tuple[Any, str]:
    """A pack file (its grid and matrix order) or a pack id (what the last sheet used)."""
    path = Path(pack)
    if path.suffix in (".yaml", ".yml") or path.is_file():
        from stablenew.packs import load_pack

        loaded = load_pack(path)
        return loaded, loaded.spec.pack
    return None, pack


def _check_on_disk(settings: Settings, pack_id: str) -> None:
    if pack_id not in list_packs(settings.resolved_output_root):
        fail(
            f"no images of pack {pack_id!r} under {settings.resolved_output_root}",
            EXIT_BAD_INPUT,
        )


@guarded
def grid(
    pack: str = typer.Argument(..., help="Pack file (YAML) or pack id."),
    x: str | None = typer.Option(None, "--x", help="Slot across (default: the pack's grid.x)."),
    y: str | None = typer.Option(None, "--y", help="Slot down (default: the pack's grid.y)."),
    as_json: bool = JsonOpt,
) -> None:
    """Rebuild PACK's X/Y contact sheet(s) from the images on disk."""
    settings = get_settings()
    loaded, pack_id = _pack_and_id(pack)
    _check_on_disk(settings, pack_id)
    axes = (
        pack_axes(loaded)
        if loaded is not None
        else stored_axes(settings.resolved_output_root, pack_id)
    )
    if x or y:
        axes.update(x=x or axes.get("x"), y=y)
    expected = None
    if loaded is not None:
        from stablenew.builder import count_jobs

        expected = count_jobs(loaded)
    try:
        result = build_sheets(
            settings.resolved_output_root, pack_id, expected_jobs=expected, **axes
        )
    except GridError as e:
        fail(str(e), EXIT_BAD_INPUT)
    summary = {
        "pack": pack_id,
        "sheets": [str(s.path) for s in result.sheets],
        "layout": str(result.layout_path),
        "complete": result.complete,
        "missing_cells": sum(len(s.missing) for s in result.sheets),
    }
    if as_json:
        print_json(summary)
        return
    for sheet in result.sheets:
        console.print(f"Sheet: [bold]{sheet.path}[/]", highlight=False, soft_wrap=True)
    if not result.complete:
        console.print(f"Partial: {summary['missing_cells']} cell(s) still pending.")


def _history_jobs(settings: Settings, pack_id: str | None) -> list[PendingJob]:
    """Statuses from the history file, if there is one; empty otherwise (never an error)."""
    from stablenew.errors import StableNewError

    url = settings.resolved_history_url
    if url.startswith("sqlite:///") and not Path(url.removeprefix("sqlite:///")).is_file():
        return []
    try:
        from stablenew.history import open_store

        store = open_store(url, read_only=True)
    except StableNewError:
        return []
    jobs: list[PendingJob] = []
    try:
        after: str | None = None
        while True:
            page = store.list_jobs(limit=500, after=after, pack=pack_id)
            for row in page.items:
                record = row.record()
                jobs.append(
                    PendingJob(
                        row.pack_id,
                        row.job_id,
                        row.status.value,
                        record.prompt,
                        record.matrix_slot_values,
                    )
                )
            if page.next_cursor is None:
                return jobs
            after = page.next_cursor
    except StableNewError:
        return jobs
    finally:
        store.close()


@guarded
def gallery(
    pack: str | None = typer.Argument(None, help="Pack file or id; every pack if omitted."),
    serve: bool = typer.Option(
        False, "--serve", help="Serve the outputs read-only on 127.0.0.1 until Ctrl-C."
    ),
    port: int = typer.Option(0, "--port", help="Port for --serve (default: a free one)."),
    open_browser: bool | None = typer.Option(
        None, "--open/--no-open", help="Open it in a browser (default: on a terminal)."
    ),
    as_json: bool = JsonOpt,
) -> None:
    """Write the static gallery (index.html) of PACK, or of everything, and open or serve it."""
    settings = get_settings()
    root = settings.resolved_output_root
    known = _history_jobs(settings, None)
    if pack is not None:
        loaded, pack_id = _pack_and_id(pack)
        _check_on_disk(settings, pack_id)
        done = refresh_pack(root, pack_id, pack=loaded, pending=known)
        page = done.gallery
    else:
        page = write_index(root, known)
    rel = page.resolve().relative_to(root.resolve()).as_posix()
    if open_browser is None:
        open_browser = sys.stdout.isatty() and not as_json
    if not serve:
        if as_json:
            print_json({"index": str(page)})
        else:
            console.print(f"Gallery: [bold]{page}[/]", highlight=False, soft_wrap=True)
        if open_browser:
            webbrowser.open(page.resolve().as_uri())
        return
    with serving(root, settings.home, port=port) as server:
        url = f"{server.url}/{rel}"
        if as_json:
            print_json({"index": str(page), "url": url})
        else:
            console.print(
                f"Serving {root} read-only at [bold]{url}[/] (Ctrl-C stops).", highlight=False
            )
        if open_browser:
            webbrowser.open(url)
        with contextlib.suppress(KeyboardInterrupt):
            server.wait()
