"""Check names against what the WebUI actually has, before spending GPU time on them.

A1111 1.10 silently falls back to ``DPM++ 2M`` for an unknown sampler, keeps (or loads
another) checkpoint for an unknown model, skips an unknown LoRA and reads an unknown embedding
as plain prompt text, so a typo would render the wrong images and report success. Checking
names against the WebUI's own lists turns that into a fast, precise failure: per job at run
time (:func:`check_record`, in the worker) and per pack before anything is queued
(:func:`check_names`, :func:`build_and_check`), with the nearest known name as a suggestion.
"""

from __future__ import annotations

import difflib
import os
import re
from collections.abc import Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from stablenew.builder import build_jobs
from stablenew.errors import PackError, PackIssue, WebUIRequestRejected
from stablenew.packs import LoadedPack, load_pack
from stablenew.packs._yaml import Loc, YamlProblem, dotted, parse_yaml, read_pack_bytes
from stablenew.records import NormalizedJobRecord
from stablenew.webui.client import QUICK_READ_TIMEOUT, WebUIClient

# What each kind of name is called in messages, and the WebUI list it is checked against.
CHECKPOINT, VAE, SAMPLER, SCHEDULER, UPSCALER, LORA, EMBEDDING = (
    "checkpoint",
    "VAE",
    "sampler",
    "scheduler",
    "upscaler",
    "LoRA",
    "embedding",
)
# Pack keys that hold a name, per settings layer (defaults / prompt settings / stage).
_SETTING_KINDS = {"model": CHECKPOINT, "vae": VAE, "sampler": SAMPLER, "scheduler": SCHEDULER}
_STAGE_KINDS = {"sampler": SAMPLER, "scheduler": SCHEDULER, "upscaler": UPSCALER}
# The WebUIInventory attribute that lists each kind.
_KNOWN = {
    CHECKPOINT: "models",
    VAE: "vaes",
    SAMPLER: "samplers",
    SCHEDULER: "schedulers",
    UPSCALER: "upscalers",
    LORA: "loras",
    EMBEDDING: "embeddings",
}


def _basename(path: str) -> str:
    return re.split(r"[\\/]", path)[-1]


@dataclass(frozen=True, slots=True)
class WebUIInventory:
    """Names the WebUI accepts, as it lists them.

    Samplers and schedulers are kept exactly as listed: A1111 1.10 matches them by exact
    display name (no aliases, case counts) and silently falls back to another for anything
    else. The other lists are lower-cased and matched ignoring case. ``embeddings`` is
    ``None`` when the WebUI has no embeddings list (then they are not checked); ``listed``
    keeps the names as the WebUI spells them, per kind, for suggestions; ``url`` is the
    WebUI's (credentials removed).
    """

    models: frozenset[str]
    samplers: frozenset[str]
    schedulers: frozenset[str]
    upscalers: frozenset[str]
    vaes: frozenset[str]
    loras: frozenset[str]
    embeddings: frozenset[str] | None = None
    listed: Mapping[str, tuple[str, ...]] = field(default_factory=dict, compare=False)
    url: str = field(default="", compare=False)

    @classmethod
    def fetch(cls, client: WebUIClient) -> WebUIInventory:
        models: set[str] = set()
        shown: dict[str, list[str]] = {kind: [] for kind in _KNOWN}
        for m in client.sd_models():
            title = str(m.get("title") or "")
            file = _basename(str(m.get("filename") or ""))
            name = str(m.get("model_name") or "")
            models.update(
                {
                    title,
                    title.split(" [")[0],
                    name,
                    str(m.get("hash") or ""),
                    str(m.get("sha256") or ""),
                    file,
                    file.rsplit(".", 1)[0],
                }
            )
            shown[CHECKPOINT] += [name, title.split(" [")[0]]
        samplers = {str(s.get("name") or "") for s in client.samplers()}
        shown[SAMPLER] = sorted(samplers)
        schedulers: set[str] = set()
        for s in client.schedulers():
            schedulers.update({str(s.get("name") or ""), str(s.get("label") or "")})
            schedulers.update(str(a) for a in (s.get("aliases") or []))
            shown[SCHEDULER].append(str(s.get("label") or ""))
        upscalers = {str(u.get("name") or "") for u in client.upscalers()}
        shown[UPSCALER] = sorted(upscalers)
        vaes = {"automatic", "none"}
        for v in client.sd_vae():
            # A1111 lists a VAE under its file name, the simulator under its stem: take both.
            file = _basename(str(v.get("filename") or ""))
            vaes.update({str(v.get("model_name") or ""), str(v.get("filename") or ""), file})
            shown[VAE] += [str(v.get("model_name") or ""), file]
        loras: set[str] = set()
        for lora in client.loras():
            loras.update({str(lora.get("name") or ""), str(lora.get("alias") or "")})
            shown[LORA] += [str(lora.get("name") or ""), str(lora.get("alias") or "")]
        embeddings = _embeddings(client)
        shown[EMBEDDING] = sorted(embeddings or ())
        shown[SAMPLER] += [f"{s} {label}" for s in shown[SAMPLER] for label in shown[SCHEDULER]]

        def norm(values: Iterable[str]) -> frozenset[str]:
            return frozenset(v.lower() for v in values if v)

        return cls(
            norm(models),
            frozenset(samplers - {""}),
            frozenset(schedulers - {""}),
            norm(upscalers),
            norm(vaes),
            norm(loras),
            None if embeddings is None else norm(embeddings),
            {kind: tuple(dict.fromkeys(n for n in names if n)) for kind, names in shown.items()},
            client.base_url,
        )

    def knows(self, kind: str, name: str) -> bool:
        """Whether the WebUI has ``name`` in its ``kind`` list (see the class for case)."""
        if kind == SAMPLER:
            return name in self.samplers or any(
                # "DPM++ 2M Karras": A1111 splits a trailing scheduler label off the name.
                name.endswith(" " + s) and name[: -len(s) - 1] in self.samplers
                for s in self.schedulers
            )
        if kind == SCHEDULER:
            return name in self.schedulers
        known = getattr(self, _KNOWN[kind])
        return known is None or name.lower() in known

    def suggest(self, kind: str, name: str) -> str | None:
        """The listed name nearest to ``name``, if one is close enough."""
        candidates = {n.lower(): n for n in reversed(self.listed.get(kind, ()))}
        hint = difflib.get_close_matches(name.lower(), list(candidates), n=1, cutoff=0.6)
        return candidates[hint[0]] if hint else None

    def did_you_mean(self, kind: str, name: str) -> str:
        """``"; did you mean 'y'?"`` for the nearest listed name, or ``""``."""
        hint = self.suggest(kind, name)
        return f"; did you mean {hint!r}?" if hint else ""

    def problems(self, record: NormalizedJobRecord) -> list[tuple[str, str]]:
        """(field, message) for every name in ``record`` the WebUI does not know."""
        found: list[tuple[str, str]] = []
        for use in _record_uses(record):
            if not self.knows(use.kind, use.name):
                hint = self.did_you_mean(use.kind, use.name)
                found.append((use.field, f"{use.kind} {use.name!r} is not on the WebUI{hint}"))
        return found


def _embeddings(client: WebUIClient) -> set[str] | None:
    try:
        data = client.embeddings()
    except WebUIRequestRejected as e:
        if e.status == 404:  # a WebUI without the list: embeddings are not checked
            return None
        raise
    names: set[str] = set()
    for group in ("loaded", "skipped"):
        entries = data.get(group)
        if isinstance(entries, Mapping):
            names.update(str(n) for n in entries)
    return names


def fetch_inventory(
    url: str, *, auth: tuple[str, str] | None = None, timeout: float = QUICK_READ_TIMEOUT
) -> WebUIInventory:
    """The lists of the WebUI at ``url``; :class:`WebUIError` (naming the URL) if it fails.

    The list endpoints never wait for the generation lock, so a short read timeout is right.
    """
    with WebUIClient(
        url, auth=auth, connect_timeout=min(5.0, timeout), read_timeout=timeout
    ) as client:
        return WebUIInventory.fetch(client)


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


@dataclass(frozen=True, slots=True)
class _Use:
    """A name a record (or pack file) uses, and where in the pack it may be written."""

    kind: str
    name: str
    field: str  # the record's field, as the run-time check names it
    row: int = 0
    job: str = ""
    where: tuple[Loc, ...] = ()  # places in the pack file, most specific first


def _layers(row: int, key: str) -> tuple[Loc, ...]:
    return (("prompts", row, "settings", key), ("defaults", key))


def _record_uses(record: NormalizedJobRecord) -> Iterator[_Use]:
    i, job = record.row_index, record.job_id
    yield _Use(CHECKPOINT, record.model, "model", i, job, _layers(i, "model"))
    if record.vae:
        yield _Use(VAE, record.vae, "vae", i, job, _layers(i, "vae"))
    for k, lora in enumerate(record.loras):
        yield _Use(LORA, lora.name, "loras", i, job, (("prompts", i, "loras", k, "name"),))
    for k, name in enumerate(record.embeddings):
        yield _Use(EMBEDDING, name, "embeddings", i, job, (("prompts", i, "embeddings", k),))
    for j, stage in enumerate(record.stages):
        for key, kind in _STAGE_KINDS.items():
            value = getattr(stage, key)
            if value:
                where = (("stages", j, key),) + (() if key == "upscaler" else _layers(i, key))
                yield _Use(kind, value, f"stages[{j}].{key}", i, job, where)


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
        loc = next((w for w in use.where if _value_at(root, w) == use.name), None)
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
