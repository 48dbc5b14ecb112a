"""History export: CSV and JSON Lines parse back to exactly what the store holds, ratings and
favourites included."""

from __future__ import annotations

import csv
import io
import json
from collections.abc import Iterator
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest

from stablenew.history import JobRow, SqliteHistoryStore, open_store
from stablenew.lifecycle import JobStatus
from stablenew.records import NormalizedJobRecord
from tests.core.history_support import at, make_record


@pytest.fixture
def store(tmp_path: Path) -> Iterator[SqliteHistoryStore]:
    with open_store(tmp_path / "history.db") as s:
        recs = [
            make_record(row_index=0, prompt='quotes "x", commas, newline\nand ✓ unicode'),
            make_record(row_index=1, pack_id="other", pack_title=None),
            make_record(row_index=2),
        ]
        for i, rec in enumerate(recs):
            s.record_submission(rec, flow_run_id=f"fr-{i}", at=at(i + 0.123456))
        s.record_transition(recs[0].job_id, JobStatus.RUNNING, at(5), worker="gpu-0")
        s.record_transition(
            recs[0].job_id, JobStatus.COMPLETED, at(7.5), outputs=["o/a.png", "o/b.png"]
        )
        s.record_transition(recs[2].job_id, JobStatus.FAILED, at(6), error='bad "thing"\n2')
        s.rate(recs[0].job_id, 4, note='crisp, "sharp"', at=at(8))
        s.set_favourite(recs[0].job_id, at=at(9))
        s.set_favourite(recs[1].job_id, True, at=at(9))
        yield s


def _expected(store: SqliteHistoryStore, **filters: Any) -> list[JobRow]:
    return list(store.list_jobs(limit=100, order="created_asc", **filters).items)


_INT_FIELDS = {"row_index", "combo_index", "variant_index", "batch_index", "steps", "seed"}
_INT_FIELDS |= {"width", "height", "runs"}


def _normalize(value: Any, name: str) -> Any:
    """CSV gives strings back; bring them to the JobRow field's JSON form."""
    if value == "" and name not in {"prompt_head", "error", "worker"}:
        return None
    if name.endswith("_at") and value is not None:
        return datetime.fromisoformat(value)
    if name == "outputs":
        return tuple(json.loads(value)) if isinstance(value, str) else tuple(value)
    if name == "duration_s" and value is not None:
        return float(value)
    if name in _INT_FIELDS:
        return int(value)
    return value


def _comparable(row: JobRow) -> dict[str, Any]:
    return row.model_dump(exclude={"cursor", "record_json"})


# What the fixture rated, by row (created order): stars, favourite, note.
_RATED = [(4, True, 'crisp, "sharp"'), (None, True, None), (None, False, None)]


def test_jsonl_round_trip(store: SqliteHistoryStore) -> None:
    buf = io.StringIO()
    assert store.export("jsonl", buf) == 3
    lines = buf.getvalue().splitlines()
    rows = _expected(store)
    assert len(lines) == len(rows)
    for line, row, rated in zip(lines, rows, _RATED, strict=True):
        obj = json.loads(line)
        assert (obj.pop("stars"), obj.pop("favourite"), obj.pop("rating_note")) == rated
        record = obj.pop("record")
        assert NormalizedJobRecord.model_validate(record) == row.record()
        assert row.record_json in line  # embedded verbatim, byte for byte
        got = {k: _normalize(v, k) for k, v in obj.items()}
        assert got == _comparable(row)


def test_csv_round_trip(store: SqliteHistoryStore, tmp_path: Path) -> None:
    out = tmp_path / "jobs.csv"
    assert store.export("csv", out) == 3
    with out.open(encoding="utf-8", newline="") as fh:
        parsed = list(csv.DictReader(fh))
    rows = _expected(store)
    for got, row, (stars, fav, note) in zip(parsed, rows, _RATED, strict=True):
        assert got.pop("record_json") == row.record_json
        rating = (got.pop("stars"), got.pop("favourite"), got.pop("rating_note"))
        assert rating == (str(stars or ""), str(int(fav)), note or "")
        want = _comparable(row)
        normalized = {k: _normalize(v, k) for k, v in got.items()}
        # CSV cannot tell NULL from "", so compare the nullable text columns loosely.
        for name in ("error", "worker", "pack_title", "priority", "flow_run_id"):
            assert (normalized.pop(name) or None) == (want.pop(name) or None)
        assert normalized == want


def test_export_applies_filters_and_order(store: SqliteHistoryStore) -> None:
    buf = io.StringIO()
    assert store.export("jsonl", buf, pack="demo", order="created_desc") == 2
    ids = [json.loads(line)["job_id"] for line in buf.getvalue().splitlines()]
    assert ids == [r.job_id for r in reversed(_expected(store, pack="demo"))]
    empty = io.StringIO()
    assert store.export("csv", empty, status="cancelled") == 0
    assert empty.getvalue().startswith("job_id,flow_run_id,pack_id")


def test_export_streams_in_chunks(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    """More rows than one fetch chunk: every row comes out once, in order."""
    monkeypatch.setattr("stablenew.history._export.EXPORT_CHUNK", 7)
    with open_store(tmp_path / "h.db") as s:
        recs = [make_record(row_index=i) for i in range(30)]
        s.record_many(recs)
        buf = io.StringIO()
        assert s.export("jsonl", buf, order="created_asc") == 30
        got = [json.loads(line)["job_id"] for line in buf.getvalue().splitlines()]
        assert got == [r.job_id for r in s.list_jobs(limit=100, order="created_asc").items]
    assert sorted(got) == sorted(r.job_id for r in recs)
