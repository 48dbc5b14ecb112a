"""Job id prefixes in the history store: a unique prefix resolves, an exact id wins, an
ambiguous one lists candidates, an unknown one is JobNotFound, and the lookup is an index seek."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from stablenew.errors import JobNotFound
from stablenew.history import AmbiguousJobId, SqliteHistoryStore, open_store
from stablenew.history._query import _prefix_upper_bound, prefix_sql
from tests.core.history_support import at, make_record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteHistoryStore]:
    s = open_store(tmp_path / "history.db")
    yield s
    s.close()


def _seed(store: SqliteHistoryStore, pack: str, rows: int) -> list[str]:
    records = [make_record(pack_id=pack, row_index=i) for i in range(rows)]
    for i, rec in enumerate(records):
        store.record_submission(rec, at=at(i))
    return sorted(r.job_id for r in records)


def test_unique_prefix_resolves_to_the_full_id(store: SqliteHistoryStore) -> None:
    fox = _seed(store, "fox-matrix", 3)
    _seed(store, "wolf", 1)
    assert store.resolve_job_id("fox-matrix-1") == fox[1]
    assert store.resolve_job_id(fox[2][:-3]) == fox[2]
    assert store.resolve_job_id(f"  {fox[0]}\n") == fox[0]  # pasted with whitespace
    assert store.resolve_job_id(fox[0]) == fox[0]


def test_an_exact_id_wins_over_longer_ids_it_starts(store: SqliteHistoryStore) -> None:
    short = make_record(pack_id="a")
    store.record_submission(short, at=at(0))
    # Another pack's id that starts with the whole of the first one.
    longer = make_record(pack_id=f"{short.job_id}-x")
    store.record_submission(longer, at=at(1))
    assert store.resolve_job_id(short.job_id) == short.job_id
    with pytest.raises(AmbiguousJobId):
        store.resolve_job_id(short.job_id[:-1])


def test_ambiguous_prefix_lists_a_few_candidates(store: SqliteHistoryStore) -> None:
    fox = _seed(store, "fox-matrix", 7)
    with pytest.raises(AmbiguousJobId) as caught:
        store.resolve_job_id("fox")
    error = caught.value
    assert isinstance(error, JobNotFound)  # bad input to the CLI, like an unknown id
    assert error.job_id == "fox"
    assert error.candidates == tuple(fox[:5])
    assert error.more is True
    assert fox[0] in str(error)
    assert fox[5] not in str(error)
    with pytest.raises(AmbiguousJobId) as caught:
        store.resolve_job_id("fox-matrix-", candidates=7)
    assert caught.value.candidates == tuple(fox)
    assert caught.value.more is False


@pytest.mark.parametrize("text", ["wolf", "fox-matrix-9", "fox_matrix", "fox%", "", "   "])
def test_unknown_prefix_is_job_not_found(store: SqliteHistoryStore, text: str) -> None:
    _seed(store, "fox-matrix", 2)
    with pytest.raises(JobNotFound) as caught:
        store.resolve_job_id(text)
    assert not isinstance(caught.value, AmbiguousJobId)


def test_lookup_is_a_range_seek_on_the_job_id_index(store: SqliteHistoryStore) -> None:
    _seed(store, "fox-matrix", 2)
    sql, params = prefix_sql("fox", 6)
    conn = store._db.reader()
    plan = " ".join(row[-1] for row in conn.execute(f"EXPLAIN QUERY PLAN {sql}", params))
    assert "SEARCH" in plan
    assert "job_id>? AND job_id<?" in plan


def test_upper_bound_of_a_prefix() -> None:
    assert _prefix_upper_bound("fox-1") == "fox-2"
    assert _prefix_upper_bound("a\U0010ffff") == "b"
    assert _prefix_upper_bound("\U0010ffff") is None
    assert _prefix_upper_bound("x\ud7ff") == "x\ue000"  # past the surrogates
