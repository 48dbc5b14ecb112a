"""A job and its runs in the history store: each run keeps its own status, times, outputs,
attempts and transitions; the job mirrors its latest run; legality is judged within a run;
submissions and events create runs idempotently and converge whatever their order."""

from __future__ import annotations

import itertools
import logging
import random
import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path
from typing import Any

import pytest

from stablenew.errors import JobNotFound
from stablenew.history import SqliteHistoryStore, StatusEvent, Submission, open_store
from stablenew.lifecycle import JobStatus
from tests.core.history_support import at, make_record, run_events

QUEUED, RUNNING = JobStatus.QUEUED, JobStatus.RUNNING
COMPLETED, FAILED, CANCELLED = JobStatus.COMPLETED, JobStatus.FAILED, JobStatus.CANCELLED


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteHistoryStore]:
    with open_store(tmp_path / "history.db") as s:
        yield s


def _three_runs(job_id: str) -> list[StatusEvent]:
    return [
        *run_events(job_id, "fr-1", 0, COMPLETED, took=1.5),
        *run_events(job_id, "fr-2", 100, COMPLETED, took=2.0, worker="gpu-1"),
        *run_events(job_id, "fr-3", 2500, CANCELLED, took=0.75),
    ]


def test_three_runs_keep_their_own_statuses_and_durations(
    store: SqliteHistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_record()
    subs = [
        Submission(record=rec, flow_run_id="fr-1", at=at(0), priority="normal", reason="submit"),
        Submission(record=rec, flow_run_id="fr-2", at=at(100), reason="duplicate"),
        Submission(
            record=rec, flow_run_id="fr-3", at=at(2500), reason="rerun", parent_flow_run_id="fr-2"
        ),
    ]
    with caplog.at_level(logging.WARNING):
        stats = store.record_many(subs, _three_runs(rec.job_id))
    assert caplog.records == []  # no illegal transition, no warning of any kind
    assert (stats.jobs_added, stats.runs_added) == (1, 3)

    runs = store.runs_of(rec.job_id)
    assert [(r.run_number, r.flow_run_id, r.status) for r in runs] == [
        (1, "fr-1", COMPLETED),
        (2, "fr-2", COMPLETED),
        (3, "fr-3", CANCELLED),
    ]
    assert [r.duration_s for r in runs] == pytest.approx([1.5, 2.0, 0.75])
    assert [r.created_at for r in runs] == [at(0), at(100), at(2500)]
    assert [r.worker for r in runs] == ["gpu-0", "gpu-1", "gpu-0"]
    assert [r.outputs for r in runs] == [("out/fr-1/000.png",), ("out/fr-2/000.png",), ()]
    assert [r.reason for r in runs] == ["submit", "duplicate", "rerun"]
    assert runs[2].parent_flow_run_id == "fr-2"
    assert runs[0].priority == "normal"

    job = store.get_job(rec.job_id)  # the latest run, not a span over all of them
    assert (job.status, job.runs, job.flow_run_id) == (CANCELLED, 3, "fr-3")
    assert job.duration_s == pytest.approx(0.75)
    assert (job.started_at, job.completed_at) == (at(2501), at(2501.75))
    assert job.created_at == at(0)
    assert job.priority == "normal"
    assert store.get_run("fr-2") == runs[1]

    assert all(t.legal for t in store.transitions(rec.job_id))
    assert [(t.from_status, t.to_status) for t in store.transitions(rec.job_id, "fr-3")] == [
        (JobStatus.SUBMITTED, QUEUED),
        (QUEUED, RUNNING),
        (RUNNING, CANCELLED),
    ]
    submitted = store.transitions(rec.job_id)[0]
    assert (submitted.to_status, submitted.flow_run_id) == (JobStatus.SUBMITTED, None)


def test_events_of_unknown_runs_create_them_in_order(
    store: SqliteHistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    """The exporter may see a run's states before (or without) its submission."""
    rec = make_record()
    store.record_submission(rec, at=at(0))
    assert store.runs_of(rec.job_id) == []
    assert store.get_job(rec.job_id).runs == 0
    with caplog.at_level(logging.WARNING):
        stats = store.record_many(events=_three_runs(rec.job_id))
    assert "illegal" not in caplog.text
    assert (stats.runs_added, stats.transitions_added) == (3, 9)
    runs = store.runs_of(rec.job_id)
    assert [(r.run_number, r.status, r.created_at) for r in runs] == [
        (1, COMPLETED, at(0)),
        (2, COMPLETED, at(100)),
        (3, CANCELLED, at(2500)),
    ]
    assert store.get_job(rec.job_id).status is CANCELLED


def test_a_completed_run_then_a_queued_one_is_legal(
    store: SqliteHistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_record()
    store.record_submission(rec, flow_run_id="fr-1", at=at(0))
    store.record_many(events=run_events(rec.job_id, "fr-1", 0, COMPLETED))
    with caplog.at_level(logging.WARNING, logger="stablenew.lifecycle"):
        assert store.record_transition(rec.job_id, QUEUED, at(60), flow_run_id="fr-2")
    assert caplog.records == []
    job = store.get_job(rec.job_id)
    assert (job.status, job.runs, job.flow_run_id, job.outputs) == (QUEUED, 2, "fr-2", ())
    assert job.duration_s is None
    assert store.get_run("fr-1").status is COMPLETED  # untouched by its successor


def test_events_without_a_run_apply_to_the_latest_run(store: SqliteHistoryStore) -> None:
    rec = make_record()
    store.record_many(
        [
            Submission(record=rec, flow_run_id="fr-1", at=at(0)),
            Submission(record=rec, flow_run_id="fr-2", at=at(10)),
        ]
    )
    store.record_transition(rec.job_id, QUEUED, at(11))
    store.record_transition(rec.job_id, RUNNING, at(12), worker="gpu-3")
    first, second = store.runs_of(rec.job_id)
    assert (first.status, second.status, second.worker) == (JobStatus.SUBMITTED, RUNNING, "gpu-3")
    assert {t.flow_run_id for t in store.transitions(rec.job_id)} == {None, "fr-2"}


def test_prefect_retry_of_a_failed_run_is_one_run_with_two_attempts(
    store: SqliteHistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_record()
    store.record_submission(rec, flow_run_id="fr-1", at=at(0))
    first = run_events(rec.job_id, "fr-1", 0, FAILED, took=2, attempt=1)
    # Prefect UI's Retry: AwaitingRetry (scheduled) while run_count is still 1, so the
    # exporter calls it attempt 2; running again raises run_count to 2.
    second = [
        StatusEvent(job_id=rec.job_id, flow_run_id="fr-1", status=s, at=at(t), attempt=2, **kw)
        for s, t, kw in [
            (QUEUED, 600, {}),
            (RUNNING, 601, {"worker": "gpu-2"}),
            (COMPLETED, 602.5, {"outputs": ("out/fr-1/a2/000.png",)}),
        ]
    ]
    with caplog.at_level(logging.WARNING):
        store.record_many(events=first + second)
    assert caplog.records == []
    (run,) = store.runs_of(rec.job_id)
    assert (run.status, run.attempts, run.error, run.worker) == (COMPLETED, 2, None, "gpu-2")
    assert (run.queued_at, run.started_at) == (at(600), at(601))
    assert run.duration_s == pytest.approx(1.5)  # the attempt that completed
    assert run.outputs == ("out/fr-1/a2/000.png",)
    steps = store.transitions(rec.job_id, "fr-1")
    assert [(t.from_status, t.to_status, t.attempt) for t in steps] == [
        (JobStatus.SUBMITTED, QUEUED, 1),
        (QUEUED, RUNNING, 1),
        (RUNNING, FAILED, 1),
        (FAILED, QUEUED, 2),
        (QUEUED, RUNNING, 2),
        (RUNNING, COMPLETED, 2),
    ]
    assert all(t.legal for t in steps)
    assert store.get_job(rec.job_id).status is COMPLETED


def test_a_new_attempt_seen_only_when_running_is_legal(
    store: SqliteHistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_record()
    store.record_submission(rec, flow_run_id="fr-1", at=at(0))
    store.record_many(events=run_events(rec.job_id, "fr-1", 0, FAILED, attempt=1))
    with caplog.at_level(logging.WARNING):
        store.record_transition(rec.job_id, RUNNING, at(50), flow_run_id="fr-1", attempt=2)
        store.record_transition(rec.job_id, FAILED, at(55), flow_run_id="fr-1", attempt=2)
    assert caplog.records == []
    run = store.get_run("fr-1")
    assert (run.status, run.attempts, run.duration_s) == (FAILED, 2, pytest.approx(5.0))


def test_leaving_a_final_state_without_a_new_attempt_is_illegal(
    store: SqliteHistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    rec = make_record()
    store.record_submission(rec, flow_run_id="fr-1", at=at(0))
    store.record_many(events=run_events(rec.job_id, "fr-1", 0, FAILED, attempt=1))
    with caplog.at_level(logging.WARNING, logger="stablenew.lifecycle"):
        store.record_transition(rec.job_id, QUEUED, at(50), flow_run_id="fr-1", attempt=1)
    assert f"illegal transition for job {rec.job_id} run 1: failed -> queued" in caplog.text
    assert store.transitions(rec.job_id, "fr-1")[-1].legal is False


def _final_state(store: SqliteHistoryStore, job_id: str) -> tuple[Any, ...]:
    job = store.get_job(job_id)
    runs = [r.model_dump() for r in store.runs_of(job_id)]
    steps = sorted(
        (t.flow_run_id or "", t.to_status.value, t.at, t.attempt) for t in store.transitions(job_id)
    )
    return job.model_dump(exclude={"cursor"}), runs, steps


def test_events_out_of_order_or_repeated_converge(tmp_path: Path) -> None:
    rec = make_record()
    subs = [
        Submission(record=rec, flow_run_id="fr-1", at=at(0)),
        Submission(record=rec, flow_run_id="fr-2", at=at(100)),
    ]
    events = [
        *run_events(rec.job_id, "fr-1", 0, FAILED, attempt=1),
        *run_events(rec.job_id, "fr-1", 50, COMPLETED, attempt=2),
        *run_events(rec.job_id, "fr-2", 100, CANCELLED, took=1),
    ]
    with open_store(tmp_path / "in-order.db") as s:
        s.record_many(subs, events)
        want = _final_state(s, rec.job_id)
    shuffles = random.Random(7)
    for i in range(6):
        order = events[:]
        shuffles.shuffle(order)
        with open_store(tmp_path / f"shuffled-{i}.db") as s:
            # The job first, then each event on its own (as a hook would), some twice, the
            # runs' submissions last, and everything again in bulk.
            s.record_submission(rec, at=at(0))
            for event in order:
                s.record_many(events=[event] * (1 + i % 2))
            s.record_many(subs)
            again = s.record_many(subs, order)
            assert (again.jobs_added, again.runs_added, again.transitions_added) == (0, 0, 0)
            assert _final_state(s, rec.job_id) == want, f"shuffle {i}"
    job, runs, _ = want
    assert (job["status"], job["runs"]) == (CANCELLED, 2)
    assert [(r["status"], r["attempts"]) for r in runs] == [(COMPLETED, 2), (CANCELLED, 1)]


def test_runs_are_numbered_by_creation_whatever_the_arrival(store: SqliteHistoryStore) -> None:
    rec = make_record()
    store.record_submission(rec, at=at(0))
    store.record_many(events=run_events(rec.job_id, "late", 100, COMPLETED))
    store.record_many(events=run_events(rec.job_id, "early", 10, FAILED))
    assert [r.flow_run_id for r in store.runs_of(rec.job_id)] == ["early", "late"]
    job = store.get_job(rec.job_id)
    assert (job.flow_run_id, job.status, job.runs) == ("late", COMPLETED, 2)
    # A run first seen running, then submitted earlier than its sibling: moves before it.
    store.record_transition(rec.job_id, RUNNING, at(300), flow_run_id="third")
    store.record_submission(rec, flow_run_id="third", at=at(50), reason="recovery")
    runs = store.runs_of(rec.job_id)
    assert [(r.run_number, r.flow_run_id) for r in runs] == [
        (1, "early"),
        (2, "third"),
        (3, "late"),
    ]
    assert runs[1].reason == "recovery"
    job = store.get_job(rec.job_id)
    assert (job.flow_run_id, job.status, job.runs) == ("late", COMPLETED, 3)


def test_submission_of_a_run_is_idempotent_and_fills_gaps(store: SqliteHistoryStore) -> None:
    rec = make_record()
    sub = Submission(record=rec, flow_run_id="fr-1", at=at(0))
    assert store.record_many([sub]).runs_added == 1
    assert store.record_many([sub, sub]) == store.record_many([])  # all zeros
    assert store.record_submission(rec, flow_run_id="fr-1", priority="high", reason="submit") is (
        False
    )
    run = store.get_run("fr-1")
    assert (run.run_number, run.priority, run.reason, run.created_at) == (
        1,
        "high",
        "submit",
        at(0),
    )
    assert len(store.transitions(rec.job_id)) == 1  # the job's submission only
    assert store.get_job(rec.job_id).priority == "high"


def test_rerun_with_a_new_seed_is_a_new_job_naming_its_parent(store: SqliteHistoryStore) -> None:
    parent = make_record()
    child = make_record(seed=999)
    store.record_submission(parent, flow_run_id="fr-p", at=at(0))
    store.record_submission(
        child,
        flow_run_id="fr-c",
        at=at(5),
        reason="rerun",
        parent_flow_run_id="fr-p",
        parent_job_id=parent.job_id,
    )
    assert child.job_id != parent.job_id
    run = store.runs_of(child.job_id)[0]
    assert (run.run_number, run.reason, run.parent_job_id, run.parent_flow_run_id) == (
        1,
        "rerun",
        parent.job_id,
        "fr-p",
    )
    assert store.get_job(parent.job_id).runs == 1


def test_a_flow_run_of_another_job_is_refused(
    store: SqliteHistoryStore, caplog: pytest.LogCaptureFixture
) -> None:
    one, other = make_record(row_index=1), make_record(row_index=2)
    store.record_many([Submission(record=one, flow_run_id="fr-1"), other])
    with caplog.at_level(logging.WARNING, logger="stablenew.history"):
        assert not store.record_transition(other.job_id, QUEUED, at(1), flow_run_id="fr-1")
    assert "flow run fr-1 belongs to job" in caplog.text
    assert store.runs_of(other.job_id) == []


def test_unknown_runs(store: SqliteHistoryStore) -> None:
    rec = make_record()
    store.record_submission(rec, flow_run_id="fr-1", at=at(0))
    with pytest.raises(JobNotFound, match="no run with flow run id 'nope'"):
        store.get_run("nope")
    with pytest.raises(JobNotFound, match="no run with flow run id 'nope' of job"):
        store.transitions(rec.job_id, "nope")
    with pytest.raises(JobNotFound, match="no job with id 'nope'"):
        store.runs_of("nope")
    assert store.transitions(rec.job_id, "fr-1") == []  # known run, nothing happened yet


def test_open_flow_run_ids_include_runs_that_are_not_the_latest(
    store: SqliteHistoryStore,
) -> None:
    rec = make_record()
    store.record_submission(rec, at=at(0))
    store.record_many(
        events=[
            *run_events(rec.job_id, "done", 0, COMPLETED),
            StatusEvent(job_id=rec.job_id, flow_run_id="stuck", status=QUEUED, at=at(9)),
            StatusEvent(job_id=rec.job_id, flow_run_id="stuck", status=RUNNING, at=at(10)),
            StatusEvent(job_id=rec.job_id, flow_run_id="newest", status=QUEUED, at=at(20)),
        ]
    )
    assert sorted(store.open_flow_run_ids()) == ["newest", "stuck"]
    assert store.get_job(rec.job_id).flow_run_id == "newest"


def test_prune_removes_runs_with_their_job(store: SqliteHistoryStore) -> None:
    now = at(0).now(at(0).tzinfo)
    old = make_record(row_index=1)
    kept = make_record(row_index=2)
    for rec, age in ((old, timedelta(days=40)), (kept, timedelta(days=1))):
        store.record_submission(rec, flow_run_id=f"{rec.job_id}-a", at=now - age)
        store.record_transition(rec.job_id, CANCELLED, now - age, flow_run_id=f"{rec.job_id}-a")
        store.record_transition(rec.job_id, CANCELLED, now - age, flow_run_id=f"{rec.job_id}-b")
    assert store.prune(older_than=timedelta(days=30)) == 1
    raw = sqlite3.connect(store.path)
    try:
        left = raw.execute("SELECT DISTINCT job_id FROM runs").fetchall()
        orphans = raw.execute(
            "SELECT count(*) FROM transitions WHERE job_id NOT IN (SELECT job_id FROM jobs)"
        ).fetchone()[0]
    finally:
        raw.close()
    assert (left, orphans) == ([(kept.job_id,)], 0)
    assert len(store.runs_of(kept.job_id)) == 2


def test_many_runs_of_many_jobs_in_small_batches(store: SqliteHistoryStore) -> None:
    """Batches split a job's runs and events anywhere: the result is the same."""
    recs = [make_record(row_index=i) for i in range(6)]
    subs = [
        Submission(record=r, flow_run_id=f"{r.row_index}-{n}", at=at(10 * n))
        for n, r in itertools.product(range(3), recs)
    ]
    events = [
        e
        for n, r in itertools.product(range(3), recs)
        for e in run_events(r.job_id, f"{r.row_index}-{n}", 10 * n, COMPLETED, took=n + 1)
    ]
    stats = store.record_many(subs, events, batch_size=4)
    assert (stats.jobs_added, stats.runs_added, stats.transitions_added) == (6, 18, 6 + 54)
    for r in recs:
        runs = store.runs_of(r.job_id)
        assert [x.duration_s for x in runs] == pytest.approx([1, 2, 3])
        assert store.get_job(r.job_id).duration_s == pytest.approx(3)
