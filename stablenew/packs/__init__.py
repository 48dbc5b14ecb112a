"""Prompt packs: the YAML format, its safe loader and its JSON Schema."""

from __future__ import annotations

from typing import Any

from stablenew.packs.loader import LoadedPack, load_pack
from stablenew.packs.model import PromptPack


def pack_json_schema() -> dict[str, Any]:
    """JSON Schema of the pack format, for editors (``stablenew pack schema``)."""
    return PromptPack.model_json_schema()


__all__ = ["LoadedPack", "PromptPack", "load_pack", "pack_json_schema"]
