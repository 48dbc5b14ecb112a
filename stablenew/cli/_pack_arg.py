"""Pack arguments: a YAML file, or a pack's name found in the user's and the bundled packs.

A name works from any folder (``stablenew run fox-matrix``): it is looked up in
``<data dir>/packs/`` first, then in the packs that ship with StableNew (``configs/packs/``).
A path that exists is used as it is; anything else is left for the loader to report.
"""

from __future__ import annotations

from pathlib import Path

from stablenew.settings import get_settings

SUFFIXES = (".yaml", ".yml")


def pack_dirs() -> list[Path]:
    """Where pack names are looked up, in order."""
    from stablenew.orchestration.services.deployments import project_root

    return [get_settings().home / "packs", project_root() / "configs" / "packs"]


def known_packs() -> dict[str, Path]:
    """Every pack a name can reach: name -> file (the first directory wins)."""
    found: dict[str, Path] = {}
    for directory in pack_dirs():
        for suffix in SUFFIXES:
            for path in sorted(directory.glob(f"*{suffix}")):
                found.setdefault(path.stem, path)
    return found


def find_pack(value: Path) -> Path:
    """``value`` if it is a file; else the pack of that name; else ``value`` unchanged."""
    if value.is_file() or value.parent != Path("."):
        return value
    return known_packs().get(value.name.removesuffix(value.suffix) or value.name, value)


def pack_argument(value: Path | list[Path] | None) -> Path | list[Path] | None:
    """Typer callback for PACK arguments (one or several)."""
    if value is None:
        return None
    if isinstance(value, list):
        return [find_pack(v) for v in value]
    return find_pack(value)


PACK_HELP = "Pack YAML file, or the name of a pack (see `stablenew pack ls`)."
