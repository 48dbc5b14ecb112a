"""Root of the ``stablenew`` CLI. Each command group registers itself from its own module."""

from __future__ import annotations

import typer

from stablenew.cli import gallery, history, jobs, pack, ratings, stack, webui_sim, worker

app = typer.Typer(
    name="stablenew",
    help="StableNew: prompt packs to Stable Diffusion images at scale, on Prefect.",
    no_args_is_help=True,
    add_completion=False,
    pretty_exceptions_enable=False,
)

for _group in (pack, stack, jobs, history, ratings, worker, webui_sim, gallery):
    _group.register(app)


def main() -> None:
    app()
