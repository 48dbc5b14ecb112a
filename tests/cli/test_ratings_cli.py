"""``stablenew rate | fav | learn`` and the ratings in ``history ls --rated/--fav``, ``history
show``, ``explain`` and ``history export``, in-process against a seeded history (no Prefect:
reads answer from the store as last synced)."""

from __future__ import annotations

import itertools
import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stablenew.cli.app import app
from stablenew.history import SqliteHistoryStore
from tests.core.history_support import at, make_record

runner = CliRunner()


@pytest.fixture
def ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """A 2x2 matrix of jobs (style x light), twice each, in a data dir of the test's own."""
    monkeypatch.setenv("STABLENEW_HOME", str(tmp_path))
    records = [
        make_record(pack_id="looks", matrix_slot_values={"style": s, "light": li}, batch_index=b)
        for s, li, b in itertools.product(("oil", "photo"), ("dusk", "noon"), range(2))
    ]
    with SqliteHistoryStore(tmp_path / "history.db") as store:
        for i, rec in enumerate(records):
            store.record_submission(rec, flow_run_id=f"fr-{i}", at=at(i))
    return [r.job_id for r in records]


def _run(*args: str) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": "160"})
    return result.exit_code, result.output


def test_rate_and_fav_show_up_in_ls_show_explain_and_export(ids: list[str]) -> None:
    code, out = _run("rate", ids[0][:-3], "4", "--note", "nice light")
    assert code == 0, out
    assert f"{ids[0]}: 4/5 - nice light" in out
    code, out = _run("fav", ids[1])
    assert code == 0, out
    assert "fav" in out
    assert _run("fav", ids[1], "--json")[1].count('"favourite": false') == 1  # toggled off
    _run("fav", ids[1], "--on")

    code, out = _run("history", "ls", "--rated", "--json")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == [ids[0]]
    code, out = _run("history", "ls", "--fav", "--json")
    assert [j["job_id"] for j in json.loads(out)["jobs"]] == [ids[1]]
    code, out = _run("history", "ls", "--rated")
    assert "4/5" in out
    code, out = _run("history", "show", ids[0], "--json")
    assert (json.loads(out)["stars"], json.loads(out)["rating_note"]) == (4, "nice light")
    code, out = _run("explain", ids[0])
    assert "rating: 4/5 - nice light" in out
    code, out = _run("history", "export", "--format", "jsonl", "--fav")
    (line,) = out.splitlines()
    assert json.loads(line)["favourite"] is True


def test_bad_ratings_are_bad_input(ids: list[str]) -> None:
    assert _run("rate", ids[0], "6")[0] == 2
    code, out = _run("rate", "no-such-job", "3")
    assert code == 2, out
    assert _run("fav", ids[0], "--on", "--off")[0] == 2


def test_learn_ranks_values_and_says_when_there_are_too_few(ids: list[str]) -> None:
    # oil > photo; dusk > noon. Two ratings per combination, four per value.
    stars = {("oil", "dusk"): 5, ("oil", "noon"): 4, ("photo", "dusk"): 3, ("photo", "noon"): 1}
    for job_id, (s, li, _) in zip(
        ids, itertools.product(("oil", "photo"), ("dusk", "noon"), range(2)), strict=True
    ):
        assert _run("rate", job_id, str(stars[(s, li)]))[0] == 0
    code, out = _run("learn", "looks", "--json")
    assert code == 0, out
    report = json.loads(out)
    dims = {d["name"]: [v["value"] for v in d["values"]] for d in report["dimensions"]}
    assert dims == {"slot:light": ["dusk", "noon"], "slot:style": ["oil", "photo"]}
    assert report["combinations"][0]["values"] == {"slot:light": "dusk", "slot:style": "oil"}
    assert report["notes"] == []  # four ratings per value are enough...
    assert report["combinations"][0]["enough"] is False  # ...two per combination are not
    code, out = _run("learn", "looks")
    assert code == 0, out
    assert "best combinations" in out
    code, out = _run("learn", "looks", "--min-ratings", "5")
    assert "too few ratings to tell" in out
