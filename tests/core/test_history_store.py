"""SQLite history store: recording, idempotency, out-of-order events, filters, paging, count."""

from __future__ import annotations

import logging
import sqlite3
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest

from stablenew.errors import HistoryError, JobNotFound
from stablenew.history import JobRow, SqliteHistoryStore, StatusEvent, Submission, open_store
from stablenew.lifecycle import JobStatus
from stablenew.records import NormalizedJobRecord
from tests.core.history_support import T0, at, make_record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteHistoryStore]:
    s = open_store(f"sqlite:///{tmp_path / 'history.db'}")
    yield s
    s.close()


def _finish(store: SqliteHistoryStore, rec: NormalizedJobRecord, t: float, end: JobStatus) -> None:
    store.record_transition(rec.job_id, JobStatus.QUEUED, at(t + 1))
    store.record_transition(rec.job_id, JobStatus.RUNNING, at(t + 2), worker="gpu-0")
    store.record_transition(rec.job_id, end, at(t + 5), error="boom" if end == "failed" else None)


def test_record_stored_equals_record_built_bit_for_bit(store: SqliteHistoryStore) -> None:
    rec = make_record(loras=[{"name": "detail", "weight": 0.5}], prompt="x" * 300)
    store.record_submission(rec, flow_run_id="fr-1", priority="high", at=at(0))
    row = store.get_job(rec.job_id)
    assert row.record_json == rec.model_dump_json()
    assert row.record() == rec
    assert row.prompt_head == "x" * 120
    assert (row.pack_id, row.model, row.seed, row.flow_run_id, row.priority) == (
        "demo",
        rec.model,
        1234,
        "fr-1",
        "high",
    )
    assert row.status is JobStatus.SUBMITTED
    assert row.created_at == T0


def test_rerecording_is_idempotent_and_fills_missing_run_id(store: SqliteHistoryStore) -> None:
    rec = make_record()
    assert store.record_submission(rec, at=at(0)) is True
    assert store.record_submission(rec, at=at(9)) is False
    assert store.record_submission(rec, flow_run_id="fr-9", priority="low") is False
    stats = store.record_many([rec, Submission(record=rec, at=at(3))])
    assert (stats.jobs_added, stats.transitions_added) == (0, 0)
    assert store.count() == 1
    row = store.get_job(rec.job_id)
    assert (row.created_at, row.flow_run_id, row.priority) == (T0, "fr-9", "low")
    assert [t.to_status for t in store.transitions(rec.job_id)] == [JobStatus.SUBMITTED]


def test_full_lifecycle_sets_times_duration_worker_outputs(store: SqliteHistoryStore) -> None:
    rec = make_record()
    store.record_submission(rec, at=at(0))
    _finish(store, rec, 0, JobStatus.COMPLETED)
    store.record_transition(rec.job_id, JobStatus.COMPLETED, at(5), outputs=["out/a.png"])
    row = store.get_job(rec.job_id)
    assert row.status is JobStatus.COMPLETED
    assert (row.queued_at, row.started_at, row.completed_at) == (at(1), at(2), at(5))
    assert row.duration_s == pytest.approx(3.0)
    assert row.worker == "gpu-0"
    trans = store.transitions(rec.job_id)
    assert [(t.from_status, t.to_status) for t in trans] == [
        (None, JobStatus.SUBMITTED),
        (JobStatus.SUBMITTED, JobStatus.QUEUED),
        (JobStatus.QUEUED, JobStatus.RUNNING),
        (JobStatus.RUNNING, JobStatus.COMPLETED),
    ]
    assert all(t.legal for t in trans)


def test_same_event_twice_adds_nothing(store: SqliteHistoryStore) -> None:
    rec = make_record()
    store.record_submission(rec, at=at(0))
    assert store.record_transition(rec.job_id, JobStatus.QUEUED, at(1)) is True
    assert store.record_transition(rec.job_id, JobStatus.QUEUED, at(1)) is False
    events = [StatusEvent(job_id=rec.job_id, status=JobStatus.QUEUED, at=at(1))] * 3
    assert store.record_many(events=events).transitions_added == 0
    assert len(store.transitions(rec.job_id)) == 2


def test_out_of_order_events_converge(store: SqliteHistoryStore) -> None:
    rec = make_record()
    store.record_submission(rec, at=at(0))
    store.record_transition(rec.job_id, JobStatus.FAILED, at(5), error="CUDA OOM")
    store.record_transition(rec.job_id, JobStatus.RUNNING, at(2), worker="gpu-1")
    store.record_transition(rec.job_id, JobStatus.QUEUED, at(1))
    row = store.get_job(rec.job_id)
    assert row.status is JobStatus.FAILED  # the older events did not overwrite it
    assert (row.status_at, row.queued_at, row.started_at) == (at(5), at(1), at(2))
    assert row.duration_s == pytest.approx(3.0)
    assert (row.error, row.worker) == ("CUDA OOM", "gpu-1")
    assert [t.to_status for t in store.transitions(rec.job_id)] == [
        JobStatus.SUBMITTED,
        JobStatus.QUEUED,
        JobStatus.RUNNING,
        JobStatus.FAILED,
    ]
    running = store.transitions(rec.job_id)[2]
    assert running.from_status is JobStatus.SUBMITTED  # nothing earlier was known then


def test_prefect_status_supersedes_submitted_even_if_clock_is_behind(
    store: SqliteHistoryStore,
) -> None:
    rec = make_record()
    store.record_submission(rec, at=at(10))
    store.record_transition(rec.job_id, JobStatus.QUEUED, at(9))
    assert store.get_job(rec.job_id).status is JobStatus.QUEUED


def test_illegal_transition_is_logged_and_recorded(
    store: SqliteHistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_record()
    store.record_submission(rec, at=at(0))
    _finish(store, rec, 0, JobStatus.COMPLETED)
    with caplog.at_level(logging.WARNING, logger="stablenew.lifecycle"):
        store.record_transition(rec.job_id, JobStatus.RUNNING, at(9))
    assert f"illegal transition for job {rec.job_id}: completed -> running" in caplog.text
    last = store.transitions(rec.job_id)[-1]
    assert (last.from_status, last.to_status, last.legal) == (
        JobStatus.COMPLETED,
        JobStatus.RUNNING,
        False,
    )
    assert store.get_job(rec.job_id).status is JobStatus.RUNNING  # Prefect is the truth


def test_unknown_job(store: SqliteHistoryStore) -> None:
    with pytest.raises(JobNotFound):
        store.get_job("nope")
    with pytest.raises(JobNotFound):
        store.transitions("nope")
    with pytest.raises(JobNotFound):
        store.record_transition("nope", JobStatus.QUEUED, at(1))
    ev = StatusEvent(job_id="nope", status=JobStatus.QUEUED, at=at(1))
    assert store.record_many(events=[ev]).unknown_jobs == ("nope",)


def test_transitions_are_append_only(store: SqliteHistoryStore) -> None:
    rec = make_record()
    store.record_submission(rec, at=at(0))
    conn = sqlite3.connect(store.path)
    try:
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("UPDATE transitions SET to_status = 'failed'")
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            conn.execute("DELETE FROM transitions")
    finally:
        conn.close()
    assert len(store.transitions(rec.job_id)) == 1


def _populate(store: SqliteHistoryStore) -> dict[str, list[str]]:
    """12 jobs over two packs and two models, created 1 s apart, statuses cycling."""
    ends = [JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED, JobStatus.RUNNING]
    ids: dict[str, list[str]] = {}
    for i in range(12):
        rec = make_record(
            pack_id="alpha" if i % 2 else "beta",
            model="sdxl" if i % 3 == 0 else "sd15",
            prompt=f"subject {i} {'fox' if i < 4 else 'owl'}",
            row_index=i,
        )
        store.record_submission(rec, at=at(i * 10))
        end = ends[i % 4]
        if end is JobStatus.RUNNING:
            store.record_transition(rec.job_id, JobStatus.QUEUED, at(i * 10 + 1))
            store.record_transition(rec.job_id, JobStatus.RUNNING, at(i * 10 + 2))
        else:
            _finish(store, rec, i * 10, end)
        ids.setdefault(end.value, []).append(rec.job_id)
        ids.setdefault("all", []).append(rec.job_id)
    return ids


def _ids(rows: tuple[JobRow, ...]) -> list[str]:
    return [r.job_id for r in rows]


def test_filters_and_count(store: SqliteHistoryStore) -> None:
    ids = _populate(store)
    assert store.count() == 12
    assert store.count(status="completed") == 3
    assert store.count(status=["failed", JobStatus.CANCELLED]) == 6
    assert store.count(pack="alpha") == 6
    assert store.count(pack="alpha", status="running") == 3
    assert store.count(model="sdxl") == 4
    assert store.count(since=at(30), until=at(60)) == 3
    assert store.count(text="FOX") == 4
    assert store.count(text="%") == 0  # LIKE wildcards are escaped
    completed = store.list_jobs(status="completed", order="created_asc")
    assert _ids(completed.items) == ids["completed"]
    page = store.list_jobs(pack="beta", model="sdxl", text="owl")
    assert [(r.pack_id, r.model, r.row_index) for r in page.items] == [("beta", "sdxl", 6)]


def test_order_offset_and_keyset_paging(store: SqliteHistoryStore) -> None:
    ids = _populate(store)
    newest_first = list(reversed(ids["all"]))
    assert _ids(store.list_jobs(limit=100).items) == newest_first
    assert _ids(store.list_jobs(limit=100, order="created_asc").items) == ids["all"]
    assert _ids(store.list_jobs(limit=5, offset=5).items) == newest_first[5:10]
    seen: list[str] = []
    cursor: str | None = None
    pages = 0
    while True:
        page = store.list_jobs(limit=5, after=cursor)
        seen += _ids(page.items)
        pages += 1
        if page.next_cursor is None:
            break
        cursor = page.next_cursor
    assert (seen, pages) == (newest_first, 3)
    asc = store.list_jobs(limit=4, order="created_asc")
    rest = store.list_jobs(limit=100, order="created_asc", after=asc.next_cursor)
    assert _ids(asc.items) + _ids(rest.items) == ids["all"]
    assert rest.next_cursor is None


def test_keyset_breaks_ties_on_equal_created_at(store: SqliteHistoryStore) -> None:
    recs = [make_record(row_index=i) for i in range(7)]
    store.record_many(Submission(record=r, at=T0) for r in recs)
    first = store.list_jobs(limit=3)
    second = store.list_jobs(limit=10, after=first.next_cursor)
    got = _ids(first.items) + _ids(second.items)
    assert sorted(got) == sorted(r.job_id for r in recs)
    assert len(set(got)) == 7


def test_bad_arguments(store: SqliteHistoryStore) -> None:
    with pytest.raises(HistoryError, match="cursor"):
        store.list_jobs(after="garbage")
    with pytest.raises(ValueError, match="limit"):
        store.list_jobs(limit=0)
    with pytest.raises(ValueError, match="order"):
        store.list_jobs(order="random")  # type: ignore[arg-type]
    with pytest.raises(HistoryError, match="unsupported history URL"):
        open_store("postgresql://db/history")


def test_record_many_batches_and_counts(store: SqliteHistoryStore) -> None:
    recs = [make_record(row_index=i) for i in range(25)]
    events = [StatusEvent(job_id=r.job_id, status=JobStatus.QUEUED, at=at(1)) for r in recs]
    stats = store.record_many(recs, events, batch_size=7)
    assert (stats.jobs_added, stats.transitions_added) == (25, 50)
    again = store.record_many(recs, events, batch_size=7)
    assert (again.jobs_added, again.transitions_added) == (0, 0)
    assert store.count(status="queued") == 25


def test_prune_by_age_and_keep_last(store: SqliteHistoryStore) -> None:
    old = [make_record(row_index=i) for i in range(4)]
    new = [make_record(row_index=10 + i) for i in range(3)]
    now = T0.now(T0.tzinfo)
    for i, rec in enumerate(old):
        store.record_submission(rec, at=now - timedelta(days=40, seconds=-i))
    for i, rec in enumerate(new):
        store.record_submission(rec, at=now - timedelta(days=1, seconds=-i))
    for rec in [*old[:3], *new]:
        store.record_transition(rec.job_id, JobStatus.CANCELLED, now - timedelta(hours=1))
    # old[3] is still "submitted": active jobs survive any retention.
    assert store.prune(keep_last=5) == 2  # old[0], old[1]
    assert store.prune(older_than=timedelta(days=30)) == 1  # old[2]
    remaining = {r.job_id for r in store.list_jobs(limit=100).items}
    assert remaining == {old[3].job_id, *(r.job_id for r in new)}
    assert store.prune(older_than=timedelta(hours=2), keep_last=1) == 2  # new[0], new[1]
    assert store.count() == 2
    raw = sqlite3.connect(store.path)
    try:
        orphans = raw.execute(
            "SELECT count(*) FROM transitions WHERE job_id NOT IN (SELECT job_id FROM jobs)"
        ).fetchone()[0]
    finally:
        raw.close()
    assert orphans == 0
    with pytest.raises(ValueError, match="older_than"):
        store.prune()


def test_watermark_roundtrip(store: SqliteHistoryStore) -> None:
    assert store.get_watermark() is None
    store.set_watermark("2024-05-01T12:00:00Z")
    store.set_watermark("2024-05-01T13:00:00Z")
    store.set_watermark("x", name="other")
    assert store.get_watermark() == "2024-05-01T13:00:00Z"
    assert store.get_watermark("other") == "x"


def test_history_survives_reopen(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path / 'h.db'}"
    rec = make_record()
    with open_store(url) as first:
        first.record_submission(rec, at=at(0))
        first.record_transition(rec.job_id, JobStatus.QUEUED, at(1))
    with open_store(url) as again:
        assert again.get_job(rec.job_id).status is JobStatus.QUEUED
        assert len(again.transitions(rec.job_id)) == 2


def test_datetime_subclasses_convert_exactly() -> None:
    """Prefect hands out pendulum DateTimes; times must still round-trip to the microsecond."""
    import pendulum

    from stablenew.history.models import from_us, to_us

    when = pendulum.datetime(2026, 11, 23, 12, 0, 0, 123456, tz="UTC")
    assert from_us(to_us(when)) == datetime(2026, 11, 23, 12, 0, 0, 123456, tzinfo=UTC)
