"""load_pack: valid packs load; every bad input is one PackError with FILE:LINE and field."""

from __future__ import annotations

import hashlib
from collections.abc import Callable
from pathlib import Path

import pytest

from stablenew.errors import PackError, PackIssue
from stablenew.packs import load_pack, pack_json_schema

WritePack = Callable[..., Path]


def _issues(path: Path) -> list[PackIssue]:
    with pytest.raises(PackError) as info:
        load_pack(path)
    assert all(i.path == str(path) for i in info.value.issues)
    return list(info.value.issues)


def _one(path: Path, field: str) -> PackIssue:
    matching = [i for i in _issues(path) if i.field == field]
    assert matching, f"no issue for {field}"
    return matching[0]


def test_valid_pack_loads_with_hash_and_lines(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: ok-pack
        title: OK
        defaults: {steps: 12, cfg_scale: 5}
        prompts:
          - text: a fox
        """
    )
    loaded = load_pack(path)
    assert loaded.spec.pack == "ok-pack"
    assert loaded.spec.defaults.cfg_scale == 5.0
    assert loaded.sha256 == hashlib.sha256(path.read_bytes()).hexdigest()
    assert loaded.line_of(("prompts", 0, "text")) == 5
    assert loaded.line_of(("prompts", 0, "settings", "steps")) == 5  # nearest ancestor


def test_unknown_keys_get_a_did_you_mean_at_their_line(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: typo
        defaults:
          stepz: 20
        prompts:
          - text: a
            negativ: b
        promt_mode: random
        """
    )
    steps = _one(path, "defaults.stepz")
    assert steps.line == 3
    assert "did you mean 'steps'" in steps.expected
    assert "did you mean 'negative'" in _one(path, "prompts[0].negativ").expected
    top = _one(path, "promt_mode")
    assert (top.line, "did you mean 'prompt_mode'" in top.expected) == (7, True)


def test_wrong_types_are_not_coerced(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: types
        defaults:
          steps: "20"
          width: 500
        seed: {base: -1, policy: sometimes}
        prompts:
          - text: 42
        """
    )
    assert _one(path, "defaults.steps").line == 3
    assert "multiple of 8" in _one(path, "defaults.width").expected
    assert _one(path, "seed.base").line == 5
    assert "'fixed', 'increment' or 'random'" in _one(path, "seed.policy").expected
    assert "valid string" in _one(path, "prompts[0].text").expected


def test_every_problem_is_reported_at_once_in_line_order(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: Bad Id
        defaults: {steps: 0}
        prompts:
          - txt: a
        """
    )
    issues = _issues(path)
    fields = [i.field for i in issues]
    assert fields == ["pack", "defaults.steps", "prompts[0].text", "prompts[0].txt"]
    assert [i.line for i in issues] == [1, 2, 4, 4]


def test_zero_prompts(write_pack: WritePack) -> None:
    issue = _one(write_pack("pack: empty\nprompts: []\n"), "prompts")
    assert issue.line == 2
    assert "at least 1 item" in issue.expected


def test_missing_required_keys(write_pack: WritePack) -> None:
    issues = _issues(write_pack("title: nothing else\n"))
    assert {i.field for i in issues} == {"pack", "prompts"}


@pytest.mark.parametrize(
    ("stages", "needle"),
    [
        ("[{type: img2img, denoising_strength: 0.5}]", "starting with txt2img"),
        ("[{type: txt2img}, {type: img2img}]", "denoising_strength"),
        ("[{type: txt2img}, {type: upscale, scale: 2}]", "upscaler and scale"),
        ("[{type: txt2img}, {type: upscale, upscaler: x, scale: 2, steps: 3}]", "only upscaler"),
    ],
)
def test_stage_chain_rules(write_pack: WritePack, stages: str, needle: str) -> None:
    path = write_pack(f"pack: st\nprompts: [{{text: a}}]\nstages: {stages}\n")
    (issue,) = _issues(path)
    assert issue.line == 3
    assert issue.field.startswith("stages")
    assert needle in issue.expected


def test_non_yaml_names_the_line(write_pack: WritePack) -> None:
    (issue,) = _issues(write_pack("pack: x\nprompts:\n  - text: [unclosed\n"))
    assert issue.line == 4
    assert issue.expected.startswith("valid YAML")


@pytest.mark.parametrize(
    ("content", "needle"),
    [
        ("- just\n- a list\n", "mapping"),
        ("", "empty"),
        ("pack: a\npack: b\nprompts: [{text: a}]\n", "only once"),
        ("pack: !!python/object:os.system x\nprompts: []\n", "valid YAML"),
    ],
)
def test_not_a_pack_shaped_document(write_pack: WritePack, content: str, needle: str) -> None:
    issues = _issues(write_pack(content))
    assert any(needle in i.expected and i.line is not None for i in issues)


def test_undecodable_bytes(tmp_path: Path) -> None:
    path = tmp_path / "bin.yaml"
    path.write_bytes(b"pack: \xff\xfe\n")
    (issue,) = _issues(path)
    assert "UTF-8" in issue.expected


def test_billion_laughs_is_refused_without_expanding(write_pack: WritePack) -> None:
    lines = ['a: &a ["lol","lol","lol","lol","lol","lol","lol","lol","lol"]']
    for prev, cur in zip("abcdefgh", "bcdefghi", strict=True):
        refs = ",".join([f"*{prev}"] * 9)
        lines.append(f"{cur}: &{cur} [{refs}]")
    path = write_pack("\n".join(lines) + "\npack: x\nprompts: [{text: a}]\n")
    (issue,) = _issues(path)
    assert "alias" in issue.expected
    assert issue.line is not None


def test_recursive_alias_is_refused(write_pack: WritePack) -> None:
    (issue,) = _issues(write_pack("pack: x\nloop: &l [*l]\nprompts: [{text: a}]\n"))
    assert "recursive" in issue.expected
    assert issue.line == 2


def test_small_aliases_are_fine(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: anchors
        defaults: &d {steps: 9}
        prompts:
          - text: a
            settings: *d
        """
    )
    assert load_pack(path).spec.prompts[0].settings.steps == 9


def test_file_over_one_mib_is_refused_unread(tmp_path: Path) -> None:
    path = tmp_path / "huge.yaml"
    path.write_bytes(b"pack: x\n# " + b"x" * (1024 * 1024) + b"\n")
    (issue,) = _issues(path)
    assert "1 MiB" in issue.expected


def test_missing_file(tmp_path: Path) -> None:
    (issue,) = _issues(tmp_path / "nope.yaml")
    assert "readable file" in issue.expected


def test_issue_renders_as_file_line_field_expected(write_pack: WritePack) -> None:
    path = write_pack("pack: x\nprompts: [{text: a}]\nlimits: {max_jobz: 1}\n")
    (issue,) = _issues(path)
    assert str(issue).startswith(f"{path}:3: limits.max_jobz: unknown key 'max_jobz'")


def test_json_schema_documents_every_field() -> None:
    schema = pack_json_schema()
    assert schema["required"] == ["pack", "prompts"]
    for name, prop in schema["properties"].items():
        assert prop.get("description"), name
    for model, definition in schema["$defs"].items():
        for name, prop in definition["properties"].items():
            assert prop.get("description"), f"{model}.{name}"


def test_stage_scripts_extensions_and_hires_load(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: ext
        prompts:
          - text: a fox
        stages:
          - type: txt2img
            hires: {scale: 2, upscaler: R-ESRGAN 4x+, steps: 10, denoising_strength: 0.4}
            alwayson_scripts:
              ControlNet: {args: [{module: canny, weight: 0.5}]}
          - type: img2img
            denoising_strength: 0.3
            script: {name: SD upscale, args: ["", 8, Lanczos, 2.0]}
        """
    )
    stages = load_pack(path).spec.stages
    assert stages[0].hires is not None
    assert stages[0].hires.upscaler == "R-ESRGAN 4x+"
    assert stages[0].alwayson_scripts is not None
    assert stages[0].alwayson_scripts["ControlNet"].args == [{"module": "canny", "weight": 0.5}]
    assert stages[1].script is not None
    assert stages[1].script.args == ["", 8, "Lanczos", 2.0]


@pytest.mark.parametrize(
    ("stage", "field"),
    [
        ("{type: img2img, denoising_strength: 0.5, hires: {scale: 2}}", "stages[1]"),
        ("{type: img2img, denoising_strength: 0.5, alwayson_scripts: {CN: {args: 3}}}",
         "stages[1].alwayson_scripts.CN.args"),
        ("{type: img2img, denoising_strength: 0.5, alwayson_scripts: {CN: {unit: 1}}}",
         "stages[1].alwayson_scripts.CN.unit"),
        ("{type: upscale, upscaler: Lanczos, scale: 2, script: {name: Loopback}}", "stages[1]"),
        ("{type: img2img, denoising_strength: 0.5, script: {args: [1]}}",
         "stages[1].script.name"),
    ],
)  # fmt: skip
def test_stage_scripts_and_hires_are_validated(
    write_pack: WritePack, stage: str, field: str
) -> None:
    path = write_pack(
        f"""
        pack: ext
        prompts:
          - text: a fox
        stages:
          - type: txt2img
          - {stage}
        """
    )
    assert any(i.field == field for i in _issues(path)), [i.field for i in _issues(path)]
