"""Helpers for the history store tests: hand-built records, a fixed clock, a worker process."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stablenew.history import SqliteHistoryStore, StatusEvent
from stablenew.lifecycle import JobStatus
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


def run_events(
    job_id: str,
    flow_run_id: str,
    start: float,
    end: JobStatus,
    *,
    took: float = 3.0,
    worker: str = "gpu-0",
    attempt: int | None = None,
) -> list[StatusEvent]:
    """One run's events as the exporter reports them: queued at ``start``, running a second
    later (unless it ends while queued), then ``end`` ``took`` seconds after it started."""
    common: dict[str, Any] = {"job_id": job_id, "flow_run_id": flow_run_id, "attempt": attempt}
    events = [StatusEvent(status=JobStatus.QUEUED, at=at(start), **common)]
    if end is JobStatus.CANCELLED and took == 0:
        return [*events, StatusEvent(status=end, at=at(start + 0.5), **common)]
    events.append(StatusEvent(status=JobStatus.RUNNING, at=at(start + 1), worker=worker, **common))
    events.append(
        StatusEvent(
            status=end,
            at=at(start + 1 + took),
            error="boom" if end is JobStatus.FAILED else None,
            outputs=(f"out/{flow_run_id}/000.png",) if end is JobStatus.COMPLETED else None,
            **common,
        )
    )
    return events


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
