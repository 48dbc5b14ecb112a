"""Ratings and favourites in the history store (migration 5): one per job, rating again
replaces, favourites toggle, filters ``rated``/``favourite``, pruning a job drops its rating,
and an old (v4) file gains the table without losing anything."""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from datetime import timedelta
from pathlib import Path

import pytest

from stablenew.errors import HistoryError, JobNotFound
from stablenew.history import SqliteHistoryStore, open_store
from stablenew.history.migrations import LATEST_VERSION, migrate, schema_version
from stablenew.lifecycle import JobStatus
from stablenew.records import NormalizedJobRecord
from tests.core.history_support import at, make_record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteHistoryStore]:
    with open_store(tmp_path / "h.db") as s:
        yield s


def _jobs(store: SqliteHistoryStore, n: int = 3) -> list[NormalizedJobRecord]:
    recs = [make_record(row_index=i) for i in range(n)]
    for i, rec in enumerate(recs):
        store.record_submission(rec, flow_run_id=f"fr-{i}", at=at(i))
    return recs


def test_rate_then_rate_again_replaces_stars_and_keeps_the_note(
    store: SqliteHistoryStore,
) -> None:
    rec = _jobs(store, 1)[0]
    first = store.rate(rec.job_id, 2, note="muddy", at=at(10))
    assert (first.stars, first.note, first.favourite, first.flow_run_id) == (
        2,
        "muddy",
        False,
        "fr-0",
    )
    again = store.rate(rec.job_id, 5, at=at(11))
    assert (again.stars, again.note, again.at) == (5, "muddy", at(11))
    assert store.rating(rec.job_id) == again


def test_favourite_toggles_and_sets(store: SqliteHistoryStore) -> None:
    rec = _jobs(store, 1)[0]
    assert store.set_favourite(rec.job_id).favourite is True  # toggle from nothing
    assert store.set_favourite(rec.job_id).favourite is False
    assert store.set_favourite(rec.job_id, True).favourite is True
    assert store.set_favourite(rec.job_id, True).favourite is True
    marked = store.rate(rec.job_id, 3)
    assert (marked.stars, marked.favourite) == (3, True)  # rating keeps the mark
    assert store.set_favourite(rec.job_id, False).stars == 3


def test_bad_stars_and_unknown_jobs_are_refused(store: SqliteHistoryStore) -> None:
    rec = _jobs(store, 1)[0]
    with pytest.raises(ValueError, match=r"1\.\.5"):
        store.rate(rec.job_id, 6)
    with pytest.raises(JobNotFound):
        store.rate("no-such-job", 3)
    with pytest.raises(JobNotFound):
        store.set_favourite("no-such-job")
    assert store.rating(rec.job_id) is None


def test_filters_by_rated_and_favourite(store: SqliteHistoryStore) -> None:
    a, b, c = _jobs(store)
    store.rate(a.job_id, 4)
    store.set_favourite(b.job_id, True)
    store.rate(c.job_id, 1)
    store.set_favourite(c.job_id, True)

    def ids(**filters: bool) -> set[str]:
        return {r.job_id for r in store.list_jobs(**filters).items}  # type: ignore[arg-type]

    assert ids(rated=True) == {a.job_id, c.job_id}
    assert ids(rated=False) == {b.job_id}
    assert ids(favourite=True) == {b.job_id, c.job_id}
    assert ids(rated=True, favourite=True) == {c.job_id}
    assert store.count(favourite=True) == 2
    assert {r.job_id for r, _ in store.rated_jobs("demo")} == {a.job_id, b.job_id, c.job_id}


def test_pruning_a_job_drops_its_rating(store: SqliteHistoryStore) -> None:
    rec = _jobs(store, 1)[0]
    store.record_transition(rec.job_id, JobStatus.COMPLETED, at(5), flow_run_id="fr-0")
    store.rate(rec.job_id, 5)
    assert store.prune(older_than=timedelta(0)) == 1
    assert store.ratings([rec.job_id]) == {}


def test_a_v4_database_gains_ratings_and_keeps_its_jobs(tmp_path: Path) -> None:
    path = tmp_path / "old.db"
    conn = sqlite3.connect(path, isolation_level=None)
    migrate(conn, target=4)
    conn.close()
    with open_store(path) as s:
        rec = _jobs(s, 1)[0]
    conn = sqlite3.connect(path, isolation_level=None)
    conn.execute("PRAGMA user_version = 4")
    conn.execute("DROP TABLE ratings")
    assert migrate(conn) == [5]
    assert schema_version(conn) == LATEST_VERSION == 5
    conn.close()
    with open_store(path) as s:
        assert s.get_job(rec.job_id).job_id == rec.job_id
        assert s.rate(rec.job_id, 3).stars == 3


def test_stars_out_of_range_are_refused_by_the_schema(store: SqliteHistoryStore) -> None:
    rec = _jobs(store, 1)[0]
    with pytest.raises(HistoryError):
        store._db.write(
            "bad",
            lambda c: c.execute(
                "INSERT INTO ratings (job_id, stars, at) VALUES (?, 9, 0)", (rec.job_id,)
            ),
        )
