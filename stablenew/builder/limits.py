"""What a pack may ask of the installation: its job limit and its wildcard folder.

A pack's ``limits.max_jobs`` may only lower the installation's ``limits.max_jobs`` setting;
the one that applies is the smaller. A pack's ``wildcards:`` folder must lie inside the pack's
own folder, the wildcards that ship with StableNew, or a folder of the
``limits.wildcard_roots`` setting, after ``..`` and symlinks are resolved; so must every
folder and wildcard file under it (``dynamicprompts`` follows symlinks).
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from pathlib import Path

from stablenew.errors import PackIssue
from stablenew.packs.loader import LoadedPack
from stablenew.settings import LimitsSettings

# The bundled packs (configs/packs/) name it as ../wildcards.
BUNDLED_WILDCARDS_DIR = Path(__file__).resolve().parents[2] / "configs" / "wildcards"
# What dynamicprompts reads as wildcard files.
WILDCARD_SUFFIXES = frozenset({".txt", ".json", ".yaml"})
MAX_REPORTED = 3  # escaping entries named per pack; one is enough to act on


def effective_max_jobs(pack_limit: int | None, installation: LimitsSettings) -> int:
    """The job limit that applies: the pack's own where it is lower than the installation's."""
    ceiling = installation.max_jobs
    return ceiling if pack_limit is None else min(pack_limit, ceiling)


def max_jobs_issue(pack: LoadedPack, installation: LimitsSettings) -> PackIssue | None:
    """An issue if the pack raises ``limits.max_jobs`` above the installation's."""
    own = pack.spec.limits.max_jobs
    if own is None or own <= installation.max_jobs:
        return None
    return pack.issue(
        ("limits", "max_jobs"),
        f"at most {installation.max_jobs:,}, the installation's limits.max_jobs (a pack may "
        f"only lower it; raise the setting to allow more), got {own:,}",
    )


def wildcard_roots(pack: LoadedPack, installation: LimitsSettings) -> list[Path]:
    """Folders a pack's wildcards may come from, resolved."""
    roots = [pack.base_dir, BUNDLED_WILDCARDS_DIR, *installation.wildcard_roots]
    return _unique(Path(r).expanduser().resolve() for r in roots)


def check_wildcard_dir(
    pack: LoadedPack, installation: LimitsSettings
) -> tuple[Path | None, list[PackIssue]]:
    """The resolved folder of the pack's ``wildcards:``, or the issues that refuse it."""
    named = pack.spec.wildcards
    assert named is not None
    roots = wildcard_roots(pack, installation)
    # An absolute path replaces the pack's folder; '..' and symlinks are resolved.
    folder = (pack.base_dir / named).resolve()
    expected = (
        "a folder inside the pack's folder or a wildcard root (the bundled configs/wildcards "
        "or the limits.wildcard_roots setting): " + ", ".join(str(r) for r in roots)
    )
    if not _inside(folder, roots):
        return None, [pack.issue(("wildcards",), f"{expected}; {named!r} is {folder}")]
    escaping = list(_escaping_entries(folder, roots))
    if escaping:
        shown = ", ".join(f"{path} -> {target}" for path, target in escaping[:MAX_REPORTED])
        return None, [
            pack.issue(("wildcards",), f"{expected}; {named!r} has links out of them: {shown}")
        ]
    return folder, []


def _escaping_entries(folder: Path, roots: Sequence[Path]) -> Iterable[tuple[Path, Path]]:
    """Folders and wildcard files under ``folder`` whose real place is outside ``roots``,
    walked as dynamicprompts walks (symlinks followed, dot-folders skipped)."""
    if not folder.is_dir():
        return
    visited: set[Path] = set()
    for dirname, dirnames, filenames in os.walk(folder, followlinks=True):
        here = Path(dirname)
        real = here.resolve()
        if not _inside(real, roots):
            yield here, real
            dirnames[:] = []
            continue
        if real in visited:  # a link back into the tree: walked already
            dirnames[:] = []
            continue
        visited.add(real)
        dirnames[:] = [d for d in dirnames if not d.startswith(".")]
        for name in filenames:
            path = here / name
            if path.suffix in WILDCARD_SUFFIXES and path.is_symlink():
                target = path.resolve()
                if not _inside(target, roots):
                    yield path, target


def _inside(path: Path, roots: Sequence[Path]) -> bool:
    return any(path.is_relative_to(root) for root in roots)


def _unique(paths: Iterable[Path]) -> list[Path]:
    return list(dict.fromkeys(paths))
