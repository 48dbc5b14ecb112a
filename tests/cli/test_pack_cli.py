"""``stablenew pack validate|build|count|schema``, driven in-process with typer's CliRunner.

``validate --webui`` runs against the bundled simulator over real HTTP.
"""

from __future__ import annotations

import json
import socket
from collections.abc import Iterator
from pathlib import Path

import pytest
from typer.testing import CliRunner

from stablenew.cli.app import app
from stablenew.webui.simulator import SimConfig, SimServer

runner = CliRunner()
DEMO = "configs/packs/demo.yaml"
BUNDLED = sorted(str(p) for p in Path("configs/packs").glob("*.yaml"))
BAD = "pack: bad\ndefaults:\n  stepz: 3\nprompts: []\n"
TYPOS = """\
pack: typos
defaults:
  model: sd_xl_base_1.1
  vae: sdxl_vae.safetensor
  sampler: Eulr a
  width: 64
  height: 64
  images_per_prompt: 2
prompts:
  - text: a {red|blue} fox
    loras:
      - name: add_detial
"""


@pytest.fixture(scope="module")
def webui() -> Iterator[str]:
    with SimServer(SimConfig(port=0)) as server:
        yield server.url


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


def test_validate_webui_reports_each_unknown_name_once_with_a_suggestion(
    tmp_path: Path, webui: str
) -> None:
    pack = tmp_path / "typos.yaml"
    pack.write_text(TYPOS, encoding="utf-8")
    result = runner.invoke(app, ["pack", "validate", "--webui", webui, str(pack)])
    assert result.exit_code == 2, result.output
    for line, field, name, hint in [
        (3, "defaults.model", "sd_xl_base_1.1", "sd_xl_base_1.0"),
        (4, "defaults.vae", "sdxl_vae.safetensor", "sdxl_vae.safetensors"),
        (5, "defaults.sampler", "Eulr a", "Euler a"),
        (12, "prompts[0].loras[0].name", "add_detial", "add_detail"),
    ]:
        assert f"{pack}:{line}: {field}: " in result.output
        assert result.output.count(f"not {name!r} (used by 4 jobs); did you mean {hint!r}?") == 1
    assert "4 problem(s)" in result.output


def test_validate_webui_reports_schema_and_name_problems_in_one_pass(
    tmp_path: Path, webui: str
) -> None:
    pack = tmp_path / "both.yaml"
    pack.write_text(TYPOS.replace("  width: 64\n", "  widht: 64\n"), encoding="utf-8")
    result = runner.invoke(app, ["pack", "validate", "--webui", webui, str(pack)])
    assert result.exit_code == 2, result.output
    assert f"{pack}:6: defaults.widht: unknown key 'widht'; did you mean 'width'?" in result.output
    assert f"{pack}:3: defaults.model: a checkpoint the WebUI has, not 'sd_xl_base_1.1'" in (
        result.output
    )
    assert "did you mean 'add_detail'?" in result.output


def test_validate_webui_passes_every_bundled_pack(webui: str) -> None:
    result = runner.invoke(app, ["pack", "validate", "--webui", webui, *BUNDLED])
    assert result.exit_code == 0, result.output
    for pack in BUNDLED:
        assert f"{pack}: ok (" in result.output
    assert f"names known to {webui})" in result.output


def test_validate_webui_json(tmp_path: Path, webui: str) -> None:
    pack = tmp_path / "typos.yaml"
    pack.write_text(TYPOS, encoding="utf-8")
    result = runner.invoke(app, ["pack", "validate", "--json", "--webui", webui, DEMO, str(pack)])
    assert result.exit_code == 2
    doc = json.loads(result.stdout)
    assert [r["ok"] for r in doc] == [True, False]
    assert len(doc[1]["issues"]) == 4


def test_validate_webui_that_does_not_answer_exits_3_naming_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        url = f"http://127.0.0.1:{s.getsockname()[1]}"
    result = runner.invoke(app, ["pack", "validate", "--webui", url, DEMO])
    assert result.exit_code == 3, result.output
    assert "--webui" in result.output
    assert url in result.output


def test_packs_are_found_by_name_from_any_folder(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    mine = tmp_path / "home" / "packs"
    mine.mkdir(parents=True)
    demo = Path(BUNDLED[0]).resolve().parent / "demo.yaml"
    (mine / "mine.yaml").write_text(demo.read_text().replace("pack: demo", "pack: mine"))
    monkeypatch.setenv("STABLENEW_HOME", str(tmp_path / "home"))
    monkeypatch.chdir(tmp_path)
    listed = runner.invoke(app, ["pack", "ls", "--json"])
    assert listed.exit_code == 0, listed.output
    names = json.loads(listed.stdout)
    assert {"demo", "fox-matrix", "mine"} <= set(names)
    assert names["mine"] == str(mine / "mine.yaml")
    done = runner.invoke(app, ["pack", "count", "fox-matrix"])
    assert done.exit_code == 0, done.output
    assert done.stdout.strip() == "6"
    assert runner.invoke(app, ["pack", "count", "mine"]).stdout.strip() == "4"
    missing = runner.invoke(app, ["pack", "count", "no-such-pack"])
    assert missing.exit_code == 2
