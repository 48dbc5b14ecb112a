"""``stablenew history ls|show`` and ``explain`` in-process with typer's CliRunner, against a
history seeded through the store: full job ids at 80 columns, and any unique prefix of an id
taken where an id is (ambiguous and unknown ones are bad input, exit 2)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stablenew.cli.app import app
from stablenew.history import SqliteHistoryStore
from stablenew.lifecycle import JobStatus
from tests.core.history_support import at, make_record

runner = CliRunner()


@pytest.fixture
def ids(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> list[str]:
    """Job ids of a seeded history in a data dir of the test's own, sorted."""
    monkeypatch.setenv("STABLENEW_HOME", str(tmp_path))
    records = [make_record(pack_id="fox-matrix", row_index=i) for i in range(3)]
    records.append(make_record(pack_id="a-pack-with-a-rather-long-name-for-80-columns"))
    with SqliteHistoryStore(tmp_path / "history.db") as store:
        for i, rec in enumerate(records):
            store.record_submission(rec, at=at(i))
            store.record_transition(rec.job_id, JobStatus.QUEUED, at(i + 1))
            store.record_transition(rec.job_id, JobStatus.RUNNING, at(i + 2))
            store.record_transition(rec.job_id, JobStatus.COMPLETED, at(i + 4.5))
    return sorted(r.job_id for r in records)


def _run(*args: str, columns: int = 80) -> tuple[int, str]:
    result = runner.invoke(app, list(args), env={"COLUMNS": str(columns)})
    return result.exit_code, result.output


@pytest.mark.parametrize("columns", [80, 160])
def test_history_ls_shows_full_ids_at_any_width(ids: list[str], columns: int) -> None:
    code, out = _run("history", "ls", columns=columns)
    assert code == 0, out
    lines = out.splitlines()
    assert max(len(line) for line in lines) <= columns  # the terminal width was applied
    tokens = {token for line in lines for token in line.split()}
    assert set(ids) <= tokens, out
    assert "…" not in out
    assert ("fox-matrix/0-0-0-0" in out) == (columns >= 120)  # the job name, when there is room


def test_explain_and_show_take_a_unique_prefix(ids: list[str]) -> None:
    fox_1 = next(i for i in ids if i.startswith("fox-matrix-1-"))
    code, out = _run("explain", fox_1[:-4])
    assert code == 0, out
    assert f"({fox_1}): completed" in out
    code, out = _run("history", "show", "fox-matrix-1", "--json")
    assert code == 0, out
    assert json.loads(out)["job_id"] == fox_1


@pytest.mark.parametrize("command", [["explain"], ["history", "show"]])
def test_ambiguous_prefix_is_bad_input_listing_candidates(
    ids: list[str], command: list[str]
) -> None:
    code, out = _run(*command, "fox-matrix-")
    assert code == 2
    assert "matches more than one job" in out
    assert all(i in out for i in ids if i.startswith("fox-matrix-")), out


@pytest.mark.parametrize("command", [["explain"], ["history", "show"]])
def test_unknown_prefix_is_job_not_found(ids: list[str], command: list[str]) -> None:
    code, out = _run(*command, "wolf-")
    assert code == 2
    assert "no job with id 'wolf-'" in out
