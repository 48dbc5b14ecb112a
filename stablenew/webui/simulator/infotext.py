"""A1111 infotext (the PNG ``parameters`` chunk): writing as ``create_infotext`` and parsing as
``parse_generation_parameters`` do in A1111 1.10 (reference §7)."""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

VERSION = "v1.10.1"

# A1111's fixed key order; remaining extra_generation_params follow, then Version and User.
FIXED_KEYS = (
    "Steps",
    "Sampler",
    "Schedule type",
    "CFG scale",
    "Image CFG scale",
    "Seed",
    "Face restoration",
    "Size",
    "Model hash",
    "Model",
    "FP8 weight",
    "Cache FP16 weight for LoRA",
    "VAE hash",
    "VAE",
    "Variation seed",
    "Variation seed strength",
    "Seed resize from",
    "Denoising strength",
    "Conditional mask weight",
    "Clip skip",
    "ENSD",
    "Token merging ratio",
    "Token merging ratio hr",
    "Init image hash",
    "RNG",
    "Tiling",
)

_PARAM_RE = re.compile(r"\s*(\w[\w \-/]+):\s*(\"(?:\\.|[^\\\"])+\"|[^,]*)(?:,|$)")
_SIZE_RE = re.compile(r"^(\d+)x(\d+)$")

# Defaults parse_generation_parameters fills in when the text does not say (subset of 1.10's).
PARSE_DEFAULTS: dict[str, Any] = {
    "Clip skip": "1",
    "Hires resize-1": 0,
    "Hires resize-2": 0,
    "Hires sampler": "Use same sampler",
    "Hires schedule type": "Use same scheduler",
    "Hires checkpoint": "Use same checkpoint",
    "Hires prompt": "",
    "Hires negative prompt": "",
    "Mask mode": "Inpaint masked",
    "Masked content": "original",
    "Inpaint area": "Whole picture",
    "Masked area padding": 32,
    "RNG": "GPU",
    "Schedule type": "Automatic",
    "Schedule max sigma": 0,
    "Schedule min sigma": 0,
    "Schedule rho": 0,
    "VAE Encoder": "Full",
    "VAE Decoder": "Full",
    "FP8 weight": "Disable",
    "Cache FP16 weight for LoRA": False,
    "Refiner switch by sampling steps": False,
}


def quote(value: object) -> str:
    """A value with ``,``, newline or ``:`` is JSON-quoted (non-ASCII kept)."""
    text = str(value)
    if "," not in text and "\n" not in text and ":" not in text:
        return text
    return json.dumps(text, ensure_ascii=False)


def create_infotext(prompt: str, negative_prompt: str, params: Mapping[str, object | None]) -> str:
    """``<prompt>\\nNegative prompt: <neg>\\n<k: v, ...>``, stripped; ``None`` values dropped.

    ``params`` holds the fixed keys and extra generation params; ``Version`` is appended.
    """
    ordered: dict[str, object | None] = {k: params.get(k) for k in FIXED_KEYS}
    ordered.update({k: v for k, v in params.items() if k not in ordered})
    ordered["Version"] = VERSION
    line = ", ".join(
        k if k == v else f"{k}: {quote(v)}" for k, v in ordered.items() if v is not None
    )
    negative = f"\nNegative prompt: {negative_prompt}" if negative_prompt else ""
    return f"{prompt}{negative}\n{line}".strip()


def _unquote(text: str) -> str:
    if not text or text[0] != '"' or text[-1] != '"':
        return text
    try:
        return str(json.loads(text))
    except ValueError:
        return text


def parse_generation_parameters(text: str) -> dict[str, Any]:
    """The ``parameters`` dict of ``/png-info``: string values, ``Size`` split, defaults filled."""
    res: dict[str, Any] = {}
    prompt, negative = "", ""
    done_with_prompt = False
    *lines, lastline = text.strip().split("\n") if text.strip() else [""]
    if len(_PARAM_RE.findall(lastline)) < 3:
        lines.append(lastline)
        lastline = ""
    for line in lines:
        line = line.strip()
        if line.startswith("Negative prompt:"):
            done_with_prompt = True
            line = line[16:].strip()
        if done_with_prompt:
            negative += ("" if negative == "" else "\n") + line
        else:
            prompt += ("" if prompt == "" else "\n") + line
    res["Prompt"] = prompt
    res["Negative prompt"] = negative
    for key, value in _PARAM_RE.findall(lastline):
        value = _unquote(value.strip())
        size = _SIZE_RE.match(value)
        if size is not None:
            res[f"{key}-1"], res[f"{key}-2"] = size.group(1), size.group(2)
        else:
            res[key] = value
    for key, default in PARSE_DEFAULTS.items():
        res.setdefault(key, default)
    return res


def add_params(text: str, params: Mapping[str, object | None]) -> str:
    """``text`` with ``params`` added to its parameter line, before ``Version`` (as a script's
    ``extra_generation_params`` would place them)."""
    entries = ", ".join(f"{k}: {quote(v)}" for k, v in params.items() if v is not None)
    if not entries:
        return text
    head, sep, tail = text.rpartition("\n")
    line = tail if sep else text
    marker = f", Version: {VERSION}"
    line = line.replace(marker, f", {entries}{marker}") if marker in line else f"{line}, {entries}"
    return f"{head}{sep}{line}" if sep else line
