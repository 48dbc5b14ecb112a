"""``load_pack``: a pack file in, a validated :class:`LoadedPack` out, or one PackError.

Every problem is collected first (YAML, unknown keys with a did-you-mean, wrong types,
constraints) and raised together; each issue names the file, the line and the field path.
"""

from __future__ import annotations

import difflib
import hashlib
import os
import typing
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from pydantic import BaseModel, ValidationError
from pydantic_core import ErrorDetails

from stablenew.errors import PackError, PackIssue
from stablenew.packs._yaml import Loc, YamlProblem, dotted, parse_yaml, read_pack_bytes
from stablenew.packs.model import PromptPack


@dataclass(frozen=True)
class LoadedPack:
    """A validated pack plus what the builder needs around it: file, hash, line numbers."""

    spec: PromptPack
    path: Path
    sha256: str
    lines: dict[Loc, int] = field(default_factory=dict, repr=False, compare=False)

    @property
    def base_dir(self) -> Path:
        """Directory the pack's relative paths (``wildcards:``) are resolved against."""
        return self.path.parent

    def line_of(self, loc: Loc) -> int | None:
        """Line of the node at ``loc``, or of its nearest ancestor present in the file."""
        return _line_of(self.lines, loc)

    def issue(self, loc: Loc, expected: str) -> PackIssue:
        """A :class:`PackIssue` located at ``loc`` in this pack."""
        return PackIssue(str(self.path), self.line_of(loc), dotted(loc), expected)


def _line_of(lines: dict[Loc, int], loc: Loc) -> int | None:
    for end in range(len(loc), -1, -1):
        line = lines.get(loc[:end])
        if line is not None:
            return line
    return None


def load_pack(path: str | os.PathLike[str]) -> LoadedPack:
    """Read and validate a pack file; raise :class:`PackError` with every issue found."""
    pack_path = Path(path)
    try:
        raw = read_pack_bytes(pack_path)
        doc = parse_yaml(raw, str(pack_path))
    except YamlProblem as e:
        raise PackError(e.issues) from None
    lines = doc.lines
    try:
        spec = PromptPack.model_validate(doc.data)
    except ValidationError as e:
        issues = []
        for err in e.errors():
            loc = _clean_loc(err["loc"])
            issues.append(
                PackIssue(str(pack_path), _line_of(lines, loc), dotted(loc), _expected(err))
            )
        issues.sort(key=lambda i: i.line or 0)
        raise PackError(issues) from None
    return LoadedPack(
        spec=spec, path=pack_path, sha256=hashlib.sha256(raw).hexdigest(), lines=lines
    )


def _clean_loc(loc: tuple[int | str, ...]) -> Loc:
    # Validator-internal steps (e.g. "function-after[...]") are not part of the file.
    return tuple(p for p in loc if isinstance(p, int) or "[" not in p)


def _expected(err: ErrorDetails) -> str:
    loc = _clean_loc(err["loc"])
    kind = err["type"]
    if kind == "extra_forbidden":
        key = str(loc[-1])
        allowed = _fields_at(loc[:-1])
        hint = difflib.get_close_matches(key, allowed, n=1, cutoff=0.6)
        did_you_mean = f"; did you mean {hint[0]!r}?" if hint else ""
        return f"unknown key {key!r}{did_you_mean} (allowed: {', '.join(allowed)})"
    if kind == "missing":
        return "a value (this key is required)"
    msg = err["msg"].removeprefix("Value error, ")
    if kind == "value_error":
        return msg
    shown = repr(err.get("input"))
    return f"{msg}, got {shown[:60]}"


def _fields_at(loc: Loc) -> list[str]:
    """Names of the keys the pack model accepts at ``loc`` (for a did-you-mean)."""
    current: Any = PromptPack
    for part in loc:
        model = _model_in(current)
        if model is not None and isinstance(part, str) and part in model.model_fields:
            current = model.model_fields[part].annotation
        else:
            args = [a for a in typing.get_args(current) if a is not Ellipsis]
            current = args[-1] if args else None
    model = _model_in(current)
    return list(model.model_fields) if model is not None else []


def _model_in(tp: Any) -> type[BaseModel] | None:
    if isinstance(tp, type) and issubclass(tp, BaseModel):
        return tp
    for arg in typing.get_args(tp):
        if isinstance(arg, type) and issubclass(arg, BaseModel):
            return arg
    return None
