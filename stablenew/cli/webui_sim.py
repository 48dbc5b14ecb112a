"""``stablenew webui-sim``: serve the bundled A1111-compatible simulator."""

from __future__ import annotations

import typer


def register(root: typer.Typer) -> None:
    """Adds the ``webui-sim`` command (filled in by the WebUI work)."""
    _ = root
