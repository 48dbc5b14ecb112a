"""Fixtures for pack and builder tests: write a pack (and wildcards) into a temp dir."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

import pytest

WritePack = Callable[..., Path]


@pytest.fixture
def write_pack(tmp_path: Path) -> WritePack:
    """``write_pack(yaml_text, name="pack.yaml", wildcards={"animals": "cat\\ndog"})``."""

    def write(text: str, name: str = "pack.yaml", wildcards: dict[str, str] | None = None) -> Path:
        for stem, body in (wildcards or {}).items():
            wc = tmp_path / "wildcards" / f"{stem}.txt"
            wc.parent.mkdir(parents=True, exist_ok=True)
            wc.write_text(body, encoding="utf-8")
        path = tmp_path / name
        path.write_text(textwrap.dedent(text).lstrip("\n"), encoding="utf-8")
        return path

    return write
