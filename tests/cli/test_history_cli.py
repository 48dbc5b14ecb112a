"""``stablenew history ls|show`` and ``explain`` in-process with typer's CliRunner, against a
history seeded through the store: full job ids at 80 columns, any unique prefix of an id
taken where an id is (ambiguous and unknown ones are bad input, exit 2), a job's runs listed
by ``show`` and one run's timeline by ``explain --run N``."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stablenew.cli.app import app
from stablenew.history import SqliteHistoryStore, Submission
from stablenew.lifecycle import JobStatus
from tests.core.history_support import at, make_record, run_events

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


@pytest.fixture
def rerun_job(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> str:
    """A job run three times: completed, completed (a duplicate), cancelled (a re-run of 2)."""
    monkeypatch.setenv("STABLENEW_HOME", str(tmp_path))
    rec = make_record(pack_id="thrice")
    subs = [
        Submission(record=rec, flow_run_id="fr-a", at=at(0), reason="submit"),
        Submission(record=rec, flow_run_id="fr-b", at=at(100), reason="duplicate"),
        Submission(
            record=rec, flow_run_id="fr-c", at=at(900), reason="rerun", parent_flow_run_id="fr-b"
        ),
    ]
    events = [
        *run_events(rec.job_id, "fr-a", 0, JobStatus.COMPLETED, took=1.5),
        *run_events(rec.job_id, "fr-b", 100, JobStatus.COMPLETED, took=2.25, worker="gpu-1"),
        *run_events(rec.job_id, "fr-c", 900, JobStatus.CANCELLED, took=0),
    ]
    with SqliteHistoryStore(tmp_path / "history.db") as store:
        store.record_many(subs, events)
    return rec.job_id


def test_history_show_lists_the_runs(rerun_job: str) -> None:
    code, out = _run("history", "show", rerun_job, columns=160)
    assert code == 0, out
    assert "run_count: 3" in out
    rows = [line.split() for line in out.splitlines() if line.split()[:1] in (["1"], ["2"], ["3"])]
    assert [r[:2] for r in rows] == [["1", "completed"], ["2", "completed"], ["3", "cancelled"]]
    assert "1.50" in rows[0]
    assert rows[1][4:9] == ["2.25", "1", "gpu-1", "duplicate", "1"]  # seconds .. images
    assert " ".join(rows[2]).endswith("rerun of run 2 0")  # why, then no images
    code, out = _run("history", "show", rerun_job, "--json")
    assert code == 0, out
    shown = json.loads(out)
    assert (shown["status"], shown["run_count"], shown["duration_s"]) == ("cancelled", 3, None)
    runs = shown["runs"]
    assert [(r["number"], r["status"], r["duration_s"]) for r in runs] == [
        (1, "completed", 1.5),
        (2, "completed", 2.25),
        (3, "cancelled", None),
    ]
    assert (runs[2]["parent_run"], runs[2]["reason"]) == (2, "rerun")
    assert runs[0]["outputs"] == ["out/fr-a/000.png"]


def _timeline(out: str, run: int) -> list[str]:
    """The timeline lines (each starts with its time) under "timeline of run N"."""
    section = out.split(f"timeline of run {run}")[1].split("other runs")[0]
    return [line for line in section.splitlines() if line[:4].isdigit()]


def test_explain_shows_one_run_and_names_the_others(rerun_job: str) -> None:
    code, out = _run("explain", rerun_job, columns=120)
    assert code == 0, out
    assert "run 3 of 3: cancelled, attempt(s) 1, rerun of run 2 (flow run fr-c)" in out
    assert "illegal" not in out
    assert [step.split()[1] for step in _timeline(out, 3)] == [
        "queued",
        "cancelled",
    ]
    assert "run 1: completed, 1.50 s" in out
    assert "run 2: completed, 2.25 s" in out

    code, out = _run("explain", rerun_job, "--run", "1", columns=120)
    assert code == 0, out
    assert "run 1 of 3: completed, 1.50 s" in out
    steps = [step.split()[1] for step in _timeline(out, 1)]
    assert steps == ["submitted", "queued", "running", "completed"]
    assert "run 3: cancelled" in out

    code, out = _run("explain", rerun_job, "--run", "2", "--json")
    assert code == 0, out
    info = json.loads(out)
    assert info["run"]["number"] == 2
    assert [r["number"] for r in info["runs"]] == [1, 2, 3]
    assert [s["status"] for s in info["timeline"]] == ["queued", "running", "completed"]


def test_explain_of_a_run_that_does_not_exist_is_bad_input(rerun_job: str) -> None:
    code, out = _run("explain", rerun_job, "--run", "4")
    assert code == 2
    assert "has no run 4 (it has runs 1-3)" in out
