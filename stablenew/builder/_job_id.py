"""Fast job ids: :func:`stablenew.records.compute_job_id`, specialised to one prompt row.

``compute_job_id`` hashes ``json.dumps(content, sort_keys=True, separators=(",", ":"),
ensure_ascii=False)``. Within a row only a few fields vary, so the serialization of the others
is done once and the per-job JSON is filled into a ``str.format`` template. The result is
checked against ``compute_job_id`` itself when the template is made (and by the tests); on any
difference the builder falls back to ``compute_job_id``.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Callable, Mapping
from typing import Any

from stablenew.records import compute_job_id

_JSON = json.JSONEncoder(sort_keys=True, separators=(",", ":"), ensure_ascii=False)
# Per-job fields of the content dict, with how each is serialized.
_INT_FIELDS = ("combo_index", "variant_index", "batch_index", "seed")
_JSON_FIELDS = ("prompt", "negative_prompt", "matrix_slot_values")

JobIdFn = Callable[[dict[str, Any]], str]


# Exercises escaping: quotes, braces, non-ASCII, a nested mapping.
_SAMPLE_JOB: dict[str, Any] = {
    "combo_index": 3,
    "variant_index": 2,
    "batch_index": 1,
    "seed": 4_000_000_000,
    "prompt": 'a "fox" {x} über <lora:a:0.5>',
    "negative_prompt": "blurry\\, ${x}",
    "matrix_slot_values": {"b": "2", "a": "ü"},
}


def job_id_function(static_json: Mapping[str, Any]) -> JobIdFn:
    """A function of the per-job fields that returns what ``compute_job_id`` would.

    ``static_json`` is the row's job-invariant content (JSON mode).
    """
    per_job = set(_INT_FIELDS + _JSON_FIELDS)
    # Alternating literal JSON segments and per-job field names, in sorted key order.
    segments: list[str] = []
    order: list[str] = []
    literal = "{"
    for key in sorted({*static_json, *per_job}):
        literal += ("" if literal == "{" else ",") + _JSON.encode(key) + ":"
        if key in per_job:
            segments.append(literal)
            order.append(key)
            literal = ""
        else:
            literal += _JSON.encode(static_json[key])
    segments.append(literal + "}")
    prefix = f"{static_json['pack_id']}-{static_json['row_index']}-"
    steps = [(key, key in _INT_FIELDS, seg) for key, seg in zip(order, segments[1:], strict=True)]
    encode = _JSON.encode

    def fast(job: dict[str, Any]) -> str:
        parts = [segments[0]]
        for key, is_int, segment in steps:
            parts.append(str(job[key]) if is_int else encode(job[key]))
            parts.append(segment)
        digest = hashlib.sha256("".join(parts).encode()).hexdigest()
        return (
            f"{prefix}{job['combo_index']}-{job['variant_index']}-{job['batch_index']}"
            f"-{digest[:10]}"
        )

    def slow(job: dict[str, Any]) -> str:
        return compute_job_id({**static_json, **job})

    return fast if fast(_SAMPLE_JOB) == slow(_SAMPLE_JOB) else slow
