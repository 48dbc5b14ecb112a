"""Planning a build: every check and every per-row decision, before any record exists.

``plan_pack`` merges settings, compiles prompts, resolves the stage chain per row, counts jobs
(multiplying counts, never expanding) and enforces ``limits``. It collects every problem and
raises one :class:`PackError`, so a bad pack yields no record at all.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pydantic import ValidationError

from stablenew.builder._job_id import JobIdFn, job_id_function
from stablenew.builder.limits import check_wildcard_dir, effective_max_jobs, max_jobs_issue
from stablenew.builder.matrix import (
    Combinations,
    combinations,
    protect_slots,
    slot_names,
    to_format,
)
from stablenew.builder.merge import BUILTIN_DEFAULTS, merge_settings
from stablenew.builder.prompts import PromptExpansion, PromptProblem, Wildcards, compile_prompt
from stablenew.errors import PackError, PackIssue
from stablenew.packs.loader import LoadedPack
from stablenew.packs.model import GENERATION_STAGE_KEYS, GenerationSettings, PromptSpec
from stablenew.records import LoraRef, NormalizedJobRecord, StageSpec
from stablenew.settings import LimitsSettings, get_settings

DEFAULT_WILDCARDS_DIR = Path("configs/wildcards")
# Fields that are the same for every job of a row; the rest vary per job.
PER_JOB_FIELDS = frozenset(
    {
        "job_id",
        "combo_index",
        "variant_index",
        "batch_index",
        "prompt",
        "negative_prompt",
        "matrix_slot_values",
        "seed",
    }
)
Loc = tuple[str | int, ...]
_PASS_THROUGH = ("hires", "script", "alwayson_scripts")


@dataclass(frozen=True)
class RowPlan:
    """Everything needed to emit one prompt row's jobs."""

    index: int
    expansion: PromptExpansion
    variant_count: int
    combos: Combinations
    images: int
    negative: str
    suffix: str
    slot_template: bool
    prototype: NormalizedJobRecord
    job_id: JobIdFn

    @property
    def job_count(self) -> int:
        return self.variant_count * self.combos.count * self.images


@dataclass(frozen=True)
class PackPlan:
    pack: LoadedPack
    slot_names: tuple[str, ...]
    rows: tuple[RowPlan, ...]
    total: int


class _Issues(list[PackIssue]):
    def add(self, issue: PackIssue) -> None:
        if issue not in self:
            self.append(issue)


def plan_pack(
    pack: LoadedPack,
    generation_defaults: Mapping[str, Any] | None = None,
    *,
    enforce_limits: bool = True,
    installation: LimitsSettings | None = None,
) -> PackPlan:
    """Check the pack against the filesystem and its limits and plan every row.

    ``installation`` is the ceiling the pack's limits may only lower and the wildcard roots
    (``None``: ``get_settings().limits``). Its wildcard folder is checked always, the job
    limit when ``enforce_limits``.
    """
    spec = pack.spec
    issues = _Issues()
    installation = get_settings().limits if installation is None else installation
    settings_layer = _settings_layer(generation_defaults, issues)
    if enforce_limits and (ceiling := max_jobs_issue(pack, installation)) is not None:
        issues.add(ceiling)
    names = tuple(spec.matrix.slots) if spec.matrix else ()
    wildcard_dir: Path | None = DEFAULT_WILDCARDS_DIR
    if spec.wildcards:
        wildcard_dir, refused = check_wildcard_dir(pack, installation)
        for issue in refused:
            issues.add(issue)
    if wildcard_dir is None:  # nothing may be read from it: report what is known so far
        raise PackError(sorted(issues, key=lambda x: x.line or 0))
    wildcards = Wildcards(wildcard_dir)
    pack_defaults = spec.defaults.model_dump(exclude_none=True)
    rows: list[RowPlan] = []
    for i, prompt in enumerate(spec.prompts):
        merged = merge_settings(
            BUILTIN_DEFAULTS,
            settings_layer,
            pack_defaults,
            prompt.settings.model_dump(exclude_none=True),
        )
        row = _plan_row(pack, i, prompt, merged, names, wildcards, issues)
        if row is not None:
            rows.append(row)
    total = sum(r.job_count for r in rows)
    limit = effective_max_jobs(spec.limits.max_jobs, installation)
    if enforce_limits and not issues and total > limit:
        source = "" if spec.limits.max_jobs == limit else " (the installation's)"
        issues.add(
            pack.issue(
                ("limits", "max_jobs"),
                f"at most limits.max_jobs = {limit:,} jobs{source}; the pack expands to "
                f"{total:,} (shrink the pack, or raise the limit within the installation's)",
            )
        )
    if issues:
        raise PackError(sorted(issues, key=lambda x: x.line or 0))
    return PackPlan(pack=pack, slot_names=names, rows=tuple(rows), total=total)


def _settings_layer(given: Mapping[str, Any] | None, issues: _Issues) -> dict[str, Any]:
    raw = get_settings().generation if given is None else given
    try:
        return GenerationSettings.model_validate(dict(raw)).model_dump(exclude_none=True)
    except ValidationError as e:
        for err in e.errors():
            field = "generation." + ".".join(str(p) for p in err["loc"])
            issues.add(PackIssue("settings file", None, field, err["msg"]))
        return {}


def _plan_row(
    pack: LoadedPack,
    i: int,
    prompt: PromptSpec,
    merged: dict[str, Any],
    names: tuple[str, ...],
    wildcards: Wildcards,
    issues: _Issues,
) -> RowPlan | None:
    spec = pack.spec
    negative = ", ".join(n for n in (prompt.negative, spec.negative) if n.strip())
    referenced = set(slot_names(prompt.text)) | set(slot_names(negative))
    unknown = sorted(referenced - set(names))
    for name in unknown:
        hint = difflib.get_close_matches(name, names, n=1)
        expected = (
            f"a defined matrix slot, not ${{{name}}}"
            + (f"; did you mean ${{{hint[0]}}}?" if hint else "")
            + (f" (slots: {', '.join(names)})" if names else " (the pack has no matrix)")
        )
        field = "text" if name in slot_names(prompt.text) else "negative"
        issues.add(pack.issue(("prompts", i, field), expected))
    if unknown:
        return None
    try:
        expansion = compile_prompt(
            protect_slots(prompt.text, names),
            mode=spec.prompt_mode,
            variants=prompt.variants or spec.variants,
            wildcards=wildcards,
            rng_seed=f"stablenew-prompt:{spec.pack}:{spec.seed.base}:{i}",
        )
        variant_count = expansion.count()
    except PromptProblem as e:
        issues.add(pack.issue(("prompts", i, "text"), str(e)))
        return None
    stages = _stages(pack, i, prompt, merged, issues)
    if stages is None:
        return None
    prototype = _prototype(pack, i, prompt, merged, stages, issues)
    if prototype is None:
        return None
    suffix = "".join(f", {e}" for e in prompt.embeddings) + "".join(
        f" <lora:{lora.name}:{lora.weight:g}>" for lora in prompt.loras
    )
    return RowPlan(
        index=i,
        expansion=expansion,
        variant_count=variant_count,
        combos=combinations(spec.matrix, referenced),
        images=merged["images_per_prompt"],
        negative=to_format(protect_slots(negative, names), names) if referenced else negative,
        suffix=suffix,
        slot_template=bool(referenced),
        prototype=prototype,
        job_id=job_id_function(prototype.model_dump(mode="json", exclude=set(PER_JOB_FIELDS))),
    )


def _stages(
    pack: LoadedPack, i: int, prompt: PromptSpec, merged: dict[str, Any], issues: _Issues
) -> tuple[StageSpec, ...] | None:
    """Each stage fully resolved (row settings < stage overrides), sizes under the limit."""
    spec = pack.spec
    base = {k: merged.get(k) for k in GENERATION_STAGE_KEYS}
    max_pixels = spec.limits.max_megapixels * 1_000_000
    out: list[StageSpec] = []
    pixels = 0.0
    ok = True
    for j, stage in enumerate(spec.stages):
        # Script args and hires settings pass through as written (None inside them included).
        passed = {k: getattr(stage, k) for k in _PASS_THROUGH if getattr(stage, k) is not None}
        overrides = stage.model_dump(exclude_none=True, exclude=set(_PASS_THROUGH))
        fields = overrides if stage.type == "upscale" else merge_settings(base, overrides)
        fields.update(
            (k, v.model_dump() if k != "alwayson_scripts" else _dump(v)) for k, v in passed.items()
        )
        try:
            resolved = StageSpec.model_validate(fields)
        except ValidationError as e:
            issues.add(pack.issue(("stages", j), _first_message(e)))
            ok = False
            continue
        out.append(resolved)
        if resolved.type == "upscale":
            pixels *= (resolved.scale or 1.0) ** 2
        else:
            w, h = resolved.output_size or (0, 0)
            pixels = float(w * h)
        if pixels > max_pixels:
            where = _size_source(pack, i, j, prompt, stage.type)
            issues.add(
                pack.issue(
                    where,
                    f"images of at most limits.max_megapixels = {spec.limits.max_megapixels} MP;"
                    f" stage {j} ({stage.type}) makes {pixels / 1e6:.2f} MP",
                )
            )
            ok = False
    return tuple(out) if ok else None


def _dump(scripts: Mapping[str, Any]) -> dict[str, Any]:
    return {title: spec.model_dump() for title, spec in scripts.items()}


def _size_source(pack: LoadedPack, i: int, j: int, prompt: PromptSpec, kind: str) -> Loc:
    """Where the offending size was set: the stage, the prompt, or the pack defaults."""
    stage = pack.spec.stages[j]
    if stage.width or stage.height or stage.hires or kind == "upscale":
        return ("stages", j)
    if prompt.settings.width or prompt.settings.height:
        return ("prompts", i, "settings")
    return ("defaults",)


def _prototype(
    pack: LoadedPack,
    i: int,
    prompt: PromptSpec,
    merged: dict[str, Any],
    stages: tuple[StageSpec, ...],
    issues: _Issues,
) -> NormalizedJobRecord | None:
    """A validated record of the row; jobs are copies of it with the per-job fields set."""
    spec = pack.spec
    try:
        proto = NormalizedJobRecord.model_validate(
            {
                "pack_id": spec.pack,
                "pack_title": spec.title,
                "pack_hash": pack.sha256,
                "row_index": i,
                "prompt": "prototype",
                "prompt_template": prompt.text,
                "loras": [LoraRef(name=lo.name, weight=lo.weight) for lo in prompt.loras],
                "embeddings": prompt.embeddings,
                "seed": spec.seed.base,
                "seed_policy": spec.seed.policy,
                "model": merged["model"],
                "vae": merged.get("vae"),
                "sampler": merged["sampler"],
                "scheduler": merged.get("scheduler"),
                "steps": merged["steps"],
                "cfg_scale": merged["cfg_scale"],
                "width": merged["width"],
                "height": merged["height"],
                "clip_skip": merged["clip_skip"],
                "batch_size": merged["batch_size"],
                "stages": stages,
            }
        )
    except ValidationError as e:
        issues.add(pack.issue(("prompts", i), _first_message(e)))
        return None
    return proto


def _first_message(e: ValidationError) -> str:
    err = e.errors()[0]
    where = ".".join(str(p) for p in err["loc"])
    msg = err["msg"].removeprefix("Value error, ")
    return f"{where}: {msg}" if where else msg
