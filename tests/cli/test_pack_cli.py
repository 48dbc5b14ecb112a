"""``stablenew pack validate|build|count|schema``, driven in-process with typer's CliRunner."""

from __future__ import annotations

import json
from pathlib import Path

from typer.testing import CliRunner

from stablenew.cli.app import app

runner = CliRunner()
DEMO = "configs/packs/demo.yaml"
BAD = "pack: bad\ndefaults:\n  stepz: 3\nprompts: []\n"


def _bad_pack(tmp_path: Path) -> Path:
    path = tmp_path / "bad.yaml"
    path.write_text(BAD, encoding="utf-8")
    return path


def test_validate_good_packs() -> None:
    result = runner.invoke(app, ["pack", "validate", DEMO, "configs/packs/fox-matrix.yaml"])
    assert result.exit_code == 0, result.output
    assert f"{DEMO}: ok (4 jobs)" in result.output


def test_validate_reports_every_issue_as_file_line_field(tmp_path: Path) -> None:
    bad = _bad_pack(tmp_path)
    result = runner.invoke(app, ["pack", "validate", DEMO, str(bad)])
    assert result.exit_code == 2
    assert f"{bad}:3: defaults.stepz: unknown key 'stepz'; did you mean 'steps'?" in result.output
    assert f"{bad}:4: prompts: List should have at least 1 item" in result.output


def test_validate_json(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pack", "validate", "--json", DEMO, str(_bad_pack(tmp_path))])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert [r["ok"] for r in doc] == [True, False]
    assert doc[0]["jobs"] == 4
    assert len(doc[1]["issues"]) == 2


def test_build_to_stdout_is_jsonl() -> None:
    result = runner.invoke(app, ["pack", "build", DEMO])
    assert result.exit_code == 0, result.output
    lines = result.stdout.splitlines()
    assert len(lines) == 4
    assert [json.loads(line)["batch_index"] for line in lines] == [0, 1, 0, 1]


def test_build_to_file_is_deterministic(tmp_path: Path) -> None:
    outs = [tmp_path / "a.jsonl", tmp_path / "b.jsonl"]
    for out in outs:
        result = runner.invoke(
            app, ["pack", "build", "configs/packs/fox-matrix.yaml", "--out", str(out)]
        )
        assert result.exit_code == 0, result.output
        assert f"wrote 6 records to {out}" in result.output
    assert outs[0].read_bytes() == outs[1].read_bytes()


def test_build_bad_pack_writes_nothing(tmp_path: Path) -> None:
    out = tmp_path / "out.jsonl"
    result = runner.invoke(app, ["pack", "build", str(_bad_pack(tmp_path)), "--out", str(out)])
    assert result.exit_code == 2
    assert not out.exists()


def test_count_plain_and_json() -> None:
    assert runner.invoke(app, ["pack", "count", DEMO]).stdout.strip() == "4"
    result = runner.invoke(app, ["pack", "count", "--json", "configs/packs/sdxl-portraits.yaml"])
    assert json.loads(result.stdout) == {
        "pack": "sdxl-portraits",
        "path": "configs/packs/sdxl-portraits.yaml",
        "jobs": 28,
        "max_jobs": 10000,
    }


def test_count_of_a_missing_file_exits_2(tmp_path: Path) -> None:
    result = runner.invoke(app, ["pack", "count", str(tmp_path / "none.yaml")])
    assert result.exit_code == 2
    assert "readable file" in result.output


def test_schema_is_json_schema_of_the_pack() -> None:
    result = runner.invoke(app, ["pack", "schema"])
    assert result.exit_code == 0
    schema = json.loads(result.stdout)
    assert schema["title"] == "PromptPack"
    assert "matrix" in schema["properties"]
