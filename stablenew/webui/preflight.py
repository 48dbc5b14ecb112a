"""Check names against what the WebUI actually has, before spending GPU time on them.

A1111 1.10 silently falls back to ``DPM++ 2M`` for an unknown sampler, keeps (or loads
another) checkpoint for an unknown model, skips an unknown LoRA and reads an unknown embedding
as plain prompt text, so a typo would render the wrong images and report success. Checking
names against the WebUI's own lists turns that into a fast, precise failure: per job at run
time (:func:`check_record`, in the worker) and per pack before anything is queued
(:func:`check_names`, :func:`build_and_check`), with the nearest known name as a suggestion.
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Iterator, Mapping, Sequence
from pathlib import Path
from typing import Any

from stablenew.builder import build_jobs
from stablenew.errors import PackError, PackIssue, WebUIRequestRejected
from stablenew.packs import LoadedPack, load_pack
from stablenew.packs._yaml import Loc, YamlProblem, dotted, parse_yaml, read_pack_bytes
from stablenew.records import NormalizedJobRecord
from stablenew.webui._inventory import (
    _SETTING_KINDS,
    _STAGE_KINDS,
    EMBEDDING,
    LORA,
    WebUIInventory,
    _record_uses,
    _script_uses,
    _Use,
    fetch_inventory,
)
from stablenew.webui.client import WebUIClient

__all__ = [
    "WebUIInventory",
    "build_and_check",
    "check_names",
    "check_pack_file_names",
    "check_record",
    "fetch_inventory",
]


def check_record(
    client: WebUIClient, record: NormalizedJobRecord, inventory: WebUIInventory
) -> None:
    """Raise :class:`WebUIRequestRejected` (not retryable) naming every unknown name."""
    problems = inventory.problems(record)
    if problems:
        raise WebUIRequestRejected(
            "; ".join(f"{field}: {message}" for field, message in problems),
            field=problems[0][0],
            url=client.base_url,
            status=None,
        )


# -- names of a whole pack ------------------------------------------------------------------


def _document_uses(data: Any) -> Iterator[_Use]:
    """Names written in a pack document (plain YAML data), each at its exact place."""

    def at(loc: Loc, kind: str) -> Iterator[_Use]:
        value = _value_at(data, loc)
        if isinstance(value, str) and value:
            yield _Use(kind, value, dotted(loc), where=(loc,))

    for key, kind in _SETTING_KINDS.items():
        yield from at(("defaults", key), kind)
    prompts = _value_at(data, ("prompts",))
    for i in range(len(prompts) if isinstance(prompts, list) else 0):
        for key, kind in _SETTING_KINDS.items():
            yield from at(("prompts", i, "settings", key), kind)
        loras = _value_at(data, ("prompts", i, "loras"))
        for k in range(len(loras) if isinstance(loras, list) else 0):
            yield from at(("prompts", i, "loras", k, "name"), LORA)
        embeddings = _value_at(data, ("prompts", i, "embeddings"))
        for k in range(len(embeddings) if isinstance(embeddings, list) else 0):
            yield from at(("prompts", i, "embeddings", k), EMBEDDING)
    stages = _value_at(data, ("stages",))
    for j in range(len(stages) if isinstance(stages, list) else 0):
        for key, kind in _STAGE_KINDS.items():
            yield from at(("stages", j, key), kind)
        tab = _value_at(data, ("stages", j, "type"))
        alwayson = _value_at(data, ("stages", j, "alwayson_scripts"))
        if tab in ("txt2img", "img2img"):
            script = _value_at(data, ("stages", j, "script"))
            keyed = alwayson if isinstance(alwayson, Mapping) else None
            yield from _script_uses(str(tab), j, script, keyed)


def _value_at(node: Any, loc: Loc) -> Any:
    """The value at ``loc`` in plain data or a pack model; ``None`` if there is none."""
    for part in loc:
        if isinstance(part, int):
            is_list = isinstance(node, Sequence) and not isinstance(node, str)
            node = node[part] if is_list and 0 <= part < len(node) else None
        elif isinstance(node, Mapping):
            node = node.get(part)
        else:
            node = getattr(node, part, None)
        if node is None:
            return None
    return node


def _issues(
    uses: Iterable[_Use],
    inventory: WebUIInventory,
    path: str,
    pack: LoadedPack | Mapping[Loc, int] | None,
    root: Any,
) -> list[PackIssue]:
    """One issue per distinct unknown name and place, located in the pack where possible."""
    found: dict[tuple[str, str, str], tuple[Loc | None, set[int], set[str]]] = {}
    for use in uses:
        if inventory.knows(use.kind, use.name):
            continue
        loc = next(
            (
                w
                for w in use.where
                if _value_at(root, w) == use.name or (use.keyed and _value_at(root, w) is not None)
            ),
            None,
        )
        key = (use.kind, use.name, dotted(loc) if loc is not None else use.field)
        _, rows, job_ids = found.setdefault(key, (loc, set(), set()))
        rows.add(use.row)
        job_ids.add(use.job)
    issues: list[PackIssue] = []
    for (kind, name, field_path), (loc, rows, job_ids) in found.items():
        article = "an" if kind[0] in "aeiou" else "a"
        expected = f"{article} {kind} the WebUI has, not {name!r}"
        line: int | None = None
        if loc is not None:
            line = pack.line_of(loc) if isinstance(pack, LoadedPack) else (pack or {}).get(loc)
        elif root is not None:
            expected += " (not set in the pack: it comes from the settings or built-in defaults)"
        else:
            shown = ", ".join(str(r) for r in sorted(rows))
            expected += f" (prompt row{'s' if len(rows) > 1 else ''} {shown})"
        jobs = len(job_ids - {""})  # names read from a file belong to no job
        if jobs:
            expected += f" (used by {jobs} job{'s' if jobs > 1 else ''})"
        expected += inventory.did_you_mean(kind, name)
        issues.append(PackIssue(path, line, field_path, expected))
    return sorted(issues, key=lambda i: i.line or 0)


def check_names(
    records: Iterable[NormalizedJobRecord],
    inventory: WebUIInventory,
    *,
    source: LoadedPack | str | os.PathLike[str],
) -> list[PackIssue]:
    """Every checkpoint, VAE, sampler, scheduler, upscaler, LoRA and embedding name of
    ``records`` the WebUI lacks, as :class:`PackIssue` items with a did-you-mean.

    One issue per distinct unknown name and field, not one per job. With the
    :class:`LoadedPack` the records were built from as ``source``, each issue names the pack
    key and line where the name is written; with a path, the record field.
    """
    uses = (use for record in records for use in _record_uses(record))
    if isinstance(source, LoadedPack):
        return _issues(uses, inventory, str(source.path), source, source.spec)
    return _issues(uses, inventory, os.fspath(source), None, None)


def check_pack_file_names(
    path: str | os.PathLike[str], inventory: WebUIInventory
) -> list[PackIssue]:
    """The unknown names written in a pack file, read without validating it (so a pack
    with schema errors still gets its names checked). Unreadable YAML gives no issue here:
    :func:`~stablenew.packs.load_pack` reports it."""
    try:
        doc = parse_yaml(read_pack_bytes(Path(path)), os.fspath(path))
    except YamlProblem:
        return []
    uses = _document_uses(doc.data)
    return _issues(uses, inventory, os.fspath(path), doc.lines, doc.data)


def build_and_check(
    path: str | os.PathLike[str],
    inventory: WebUIInventory | None,
    *,
    generation_defaults: Mapping[str, Any] | None = None,
) -> list[NormalizedJobRecord]:
    """Load and build the pack and check its names against ``inventory``, all in one pass.

    Raises one :class:`PackError` with every problem: schema, slots, wildcards, limits and
    unknown names (those written in the file, when the pack does not build). ``inventory``
    ``None`` skips the name check. ``generation_defaults`` as in :func:`build_jobs`.
    """
    try:
        pack = load_pack(path)
        records = list(build_jobs(pack, generation_defaults=generation_defaults))
    except PackError as e:
        if inventory is None:
            raise
        extra = [i for i in check_pack_file_names(path, inventory) if i not in e.issues]
        if not extra:
            raise
        raise PackError(sorted([*e.issues, *extra], key=lambda i: i.line or 0)) from None
    if inventory is not None:
        issues = check_names(records, inventory, source=pack)
        if issues:
            raise PackError(issues)
    return records
