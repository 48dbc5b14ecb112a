"""``stablenew pack ...``: validate, build, count, schema."""

from __future__ import annotations

import typer

pack_app = typer.Typer(help="Validate and build prompt packs.", no_args_is_help=True)


def register(root: typer.Typer) -> None:
    root.add_typer(pack_app, name="pack")
