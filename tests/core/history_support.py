"""Helpers for the history store tests: hand-built records, a fixed clock, a worker process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stablenew.history import SqliteHistoryStore
from stablenew.records import NormalizedJobRecord

T0 = datetime(2024, 5, 1, 12, 0, 0, tzinfo=UTC)


def at(seconds: float) -> datetime:
    """A time ``seconds`` after T0."""
    return T0 + timedelta(seconds=seconds)


def make_record(**over: Any) -> NormalizedJobRecord:
    fields: dict[str, Any] = {
        "pack_id": "demo",
        "pack_title": "Demo pack",
        "pack_hash": "0123456789abcdef",
        "row_index": 0,
        "prompt": "a red fox in snow, ünïcode ✓",
        "negative_prompt": "blurry",
        "seed": 1234,
        "model": "v1-5-pruned-emaonly",
        "sampler": "Euler a",
        "steps": 20,
        "cfg_scale": 7.0,
        "width": 512,
        "height": 512,
        "matrix_slot_values": {"animal": "fox"},
        "stages": [
            {
                "type": "txt2img",
                "sampler": "Euler a",
                "steps": 20,
                "cfg_scale": 7.0,
                "width": 512,
                "height": 512,
            }
        ],
    }
    fields.update(over)
    return NormalizedJobRecord(**fields)


def write_jobs(path: str, tag: str, n: int) -> None:
    """Process entry point: record ``n`` jobs one transaction each, plus one transition."""
    store = SqliteHistoryStore(Path(path), busy_timeout_s=10)
    try:
        for i in range(n):
            rec = make_record(pack_id=tag, row_index=i)
            store.record_submission(rec, at=at(i))
            store.record_transition(rec.job_id, "queued", at(i + 0.5), source=tag)
    finally:
        store.close()
