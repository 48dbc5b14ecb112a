"""Editing one job's settings: a new record, checked as the builder checks a pack.

Pure (no Prefect): :func:`edit_record` takes a record and ``{key: value}`` and returns the
edited record with its own id, or raises :class:`PackError` with the builder's messages. Each
value is validated by the pack model field that sets it in a pack (``defaults:``), with the
loader's wording; the stage chain is resolved again (a stage that inherited the old value takes
the new one, a stage's own override stays) and checked by the builder's stage and record models
and its ``limits.max_megapixels``.
"""

from __future__ import annotations

import difflib
from collections.abc import Mapping, Sequence
from typing import Any

import yaml
from pydantic import ValidationError

from stablenew.builder.plan import _first_message  # the builder's own wording
from stablenew.errors import PackError, PackIssue
from stablenew.packs.loader import _expected  # the loader's own wording
from stablenew.packs.model import GENERATION_STAGE_KEYS, GenerationSettings, Limits, SeedSpec
from stablenew.records import NormalizedJobRecord, StageSpec

EDITABLE = (*GENERATION_STAGE_KEYS, "model", "vae", "clip_skip", "batch_size", "seed")
_OPTIONAL = frozenset({"scheduler", "vae"})  # None means "the WebUI's own"
_GENERATION_STAGES = ("txt2img", "img2img")


def parse_assignments(items: Sequence[str]) -> dict[str, Any]:
    """``["steps=30", "sampler=DPM++ 2M"]`` to ``{"steps": 30, "sampler": "DPM++ 2M"}``:
    values are read as YAML scalars, as the same text in a pack would be."""
    out: dict[str, Any] = {}
    for item in items:
        key, sep, text = item.partition("=")
        if not sep or not key.strip():
            raise PackError([PackIssue("--set", None, item, "key=value")])
        try:
            value = yaml.safe_load(text) if text.strip() else None
        except yaml.YAMLError:
            value = text
        out[key.strip()] = value
    return out


def edit_record(
    record: NormalizedJobRecord, changes: Mapping[str, Any], *, limits: Limits | None = None
) -> NormalizedJobRecord:
    """``record`` with ``changes`` applied, validated; a new job id (the content changed).

    Raises :class:`PackError` (every problem, located at ``edit of <job id>``) when a key is
    not editable, a value is invalid, or the result breaks the builder's limits; and when
    nothing would change.
    """
    source = f"edit of {record.job_id}"
    issues = _check_values(source, changes)
    if issues:
        raise PackError(issues)
    content = record.content_dict()
    for key, value in changes.items():
        old = content[key]
        content[key] = value
        if key in GENERATION_STAGE_KEYS:
            for stage in content["stages"]:
                if stage["type"] in _GENERATION_STAGES and stage.get(key) == old:
                    stage[key] = value
    if "seed" in changes:
        content["seed_policy"] = "fixed"
    issues = _check_stages(source, content["stages"], limits or Limits())
    if issues:
        raise PackError(issues)
    try:
        edited = NormalizedJobRecord.model_validate(content)
    except ValidationError as e:
        raise PackError([PackIssue(source, None, "", _first_message(e))]) from None
    if edited.job_id == record.job_id:
        raise PackError([PackIssue(source, None, "", "a change (the values given are the job's)")])
    return edited


def _check_values(source: str, changes: Mapping[str, Any]) -> list[PackIssue]:
    issues: list[PackIssue] = []
    if not changes:
        issues.append(PackIssue(source, None, "", "at least one key=value"))
    settings: dict[str, Any] = {}
    for key, value in changes.items():
        if key not in EDITABLE:
            hint = difflib.get_close_matches(key, EDITABLE, n=1, cutoff=0.6)
            did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
            issues.append(
                PackIssue(
                    source,
                    None,
                    key,
                    f"an editable key, not {key!r}{did_you_mean} (editable: {', '.join(EDITABLE)})",
                )
            )
        elif value is None and key not in _OPTIONAL:
            issues.append(PackIssue(source, None, key, "a value (this key is required)"))
        elif key == "seed":
            issues += _model_issues(source, SeedSpec, {"base": value}, rename={"base": "seed"})
        else:
            settings[key] = value
    issues += _model_issues(source, GenerationSettings, settings)
    return issues


def _model_issues(
    source: str, model: Any, data: dict[str, Any], rename: Mapping[str, str] | None = None
) -> list[PackIssue]:
    try:
        model.model_validate(data)
    except ValidationError as e:
        out = []
        for err in e.errors():
            field = ".".join(str(p) for p in err["loc"] if isinstance(p, int) or "[" not in p)
            out.append(PackIssue(source, None, (rename or {}).get(field, field), _expected(err)))
        return out
    return []


def _check_stages(source: str, stages: list[dict[str, Any]], limits: Limits) -> list[PackIssue]:
    """As the builder's ``_stages``: each stage valid, no image over the megapixel limit."""
    issues: list[PackIssue] = []
    pixels = 0.0
    for j, fields in enumerate(stages):
        try:
            stage = StageSpec.model_validate(fields)
        except ValidationError as e:
            issues.append(PackIssue(source, None, f"stages.{j}", _first_message(e)))
            continue
        if stage.type == "upscale":
            pixels *= (stage.scale or 1.0) ** 2
        else:
            w, h = stage.output_size or (0, 0)
            pixels = float(w * h)
        if pixels > limits.max_megapixels * 1_000_000:
            issues.append(
                PackIssue(
                    source,
                    None,
                    f"stages.{j}",
                    f"images of at most limits.max_megapixels = {limits.max_megapixels} MP;"
                    f" stage {j} ({stage.type}) makes {pixels / 1e6:.2f} MP",
                )
            )
    return issues
