"""What the WebUI has: the names it lists (checkpoints, samplers, upscalers, LoRAs, scripts,
...), fetched once per preflight and matched the way the WebUI matches them."""

from __future__ import annotations

import difflib
import re
from collections.abc import Iterable, Iterator, Mapping
from dataclasses import dataclass, field
from typing import Any

from stablenew.errors import WebUIRequestRejected
from stablenew.packs._yaml import Loc
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
HIRES_UPSCALER = "hires upscaler"
# Scripts are listed per tab: "txt2img script", "img2img always-on script", ...
SCRIPT, ALWAYSON = "script", "always-on script"
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
    HIRES_UPSCALER: "hires_upscalers",
}
_HIRES_KINDS = {"upscaler": HIRES_UPSCALER, "sampler": SAMPLER, "scheduler": SCHEDULER}
_HIRES_KINDS |= {"checkpoint": CHECKPOINT}


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
    hires_upscalers: frozenset[str] | None = None
    scripts: Mapping[str, frozenset[str]] | None = None

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
        latent = {str(m.get("name") or "") for m in _optional_list(client.latent_upscale_modes)}
        shown[HIRES_UPSCALER] = sorted(latent | upscalers)
        scripts = _scripts(client, shown)
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
            norm(upscalers | latent),
            scripts,
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
        if kind.endswith((f" {SCRIPT}", f" {ALWAYSON}")):
            # A1111 matches script titles ignoring case; None: the WebUI does not list them.
            return self.scripts is None or name.lower() in self.scripts.get(kind, frozenset())
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


def _optional_list(get: Any) -> list[dict[str, Any]]:
    """A list endpoint some WebUIs lack: ``[]`` on 404."""
    try:
        return list(get())
    except WebUIRequestRejected as e:
        if e.status == 404:
            return []
        raise


def _scripts(
    client: WebUIClient, shown: dict[str, list[str]]
) -> Mapping[str, frozenset[str]] | None:
    """Script titles per ``"<tab> script"`` / ``"<tab> always-on script"`` kind (lower-cased,
    as ``/script-info`` lists them); ``None`` when the WebUI has no ``/script-info``."""
    try:
        info = client.script_info()
    except WebUIRequestRejected as e:
        if e.status == 404:
            return None
        raise
    found: dict[str, set[str]] = {}
    for item in info:
        tab = "img2img" if item.get("is_img2img") else "txt2img"
        kind = f"{tab} {ALWAYSON if item.get('is_alwayson') else SCRIPT}"
        name = str(item.get("name") or "")
        if name:
            found.setdefault(kind, set()).add(name.lower())
            shown.setdefault(kind, []).append(name)
    return {kind: frozenset(names) for kind, names in found.items()}


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


# -- names a record uses ---------------------------------------------------------------


@dataclass(frozen=True, slots=True)
class _Use:
    """A name a record (or pack file) uses, and where in the pack it may be written."""

    kind: str
    name: str
    field: str  # the record's field, as the run-time check names it
    row: int = 0
    job: str = ""
    where: tuple[Loc, ...] = ()  # places in the pack file, most specific first
    keyed: bool = False  # the name is the key at ``where`` (not its value)


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
        if stage.hires is not None:
            for key, kind in _HIRES_KINDS.items():
                value = getattr(stage.hires, key)
                if value:
                    loc = ("stages", j, "hires", key)
                    yield _Use(kind, value, f"stages[{j}].hires.{key}", i, job, (loc,))
        yield from _script_uses(stage.type, j, stage.script, stage.alwayson_scripts, i, job)


def _script_uses(
    tab: str, j: int, script: Any, alwayson: Mapping[str, Any] | None, row: int = 0, job: str = ""
) -> Iterator[_Use]:
    """The selectable script and always-on script titles of stage ``j``."""
    name = script.get("name") if isinstance(script, Mapping) else getattr(script, "name", None)
    if isinstance(name, str) and name:
        loc = ("stages", j, "script", "name")
        yield _Use(f"{tab} {SCRIPT}", name, f"stages[{j}].script.name", row, job, (loc,))
    for title in alwayson or {}:
        loc = ("stages", j, "alwayson_scripts", title)
        field_path = f"stages[{j}].alwayson_scripts.{title}"
        yield _Use(f"{tab} {ALWAYSON}", str(title), field_path, row, job, (loc,), keyed=True)
