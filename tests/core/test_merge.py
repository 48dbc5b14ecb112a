"""merge_settings alone, and the full precedence chain as it lands on built records."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stablenew.builder import BUILTIN_DEFAULTS, build_jobs, merge_settings

WritePack = Callable[..., Path]


def test_later_layers_win_and_none_means_unset() -> None:
    merged = merge_settings(
        {"steps": 20, "cfg_scale": 7.0, "sampler": "Euler a"},
        None,
        {"steps": 30, "cfg_scale": None},
        {},
        {"sampler": "DPM++ 2M"},
    )
    assert merged == {"steps": 30, "cfg_scale": 7.0, "sampler": "DPM++ 2M"}


def test_merge_does_not_mutate_its_layers() -> None:
    low = {"steps": 20}
    merge_settings(low, {"steps": 5})
    assert low == {"steps": 20}


def test_precedence_builtin_settings_pack_prompt_stage(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: prec
        defaults: {steps: 25, width: 640}
        prompts:
          - text: a
          - text: b
            settings: {steps: 40, sampler: DPM++ 2M}
        stages:
          - type: txt2img
          - type: img2img
            denoising_strength: 0.5
            steps: 10
            sampler: Euler
        """
    )
    settings_file = {"steps": 99, "cfg_scale": 5.5, "model": "sd_xl_base_1.0", "width": 1024}
    a, b = build_jobs(path, generation_defaults=settings_file)
    # built-in defaults fill what nobody set
    assert a.height == BUILTIN_DEFAULTS["height"]
    assert a.sampler == BUILTIN_DEFAULTS["sampler"]
    # settings file over built-ins
    assert (a.model, a.cfg_scale) == ("sd_xl_base_1.0", 5.5)
    # pack defaults over settings file
    assert (a.steps, a.width) == (25, 640)
    # prompt settings over pack defaults
    assert (b.steps, b.sampler) == (40, "DPM++ 2M")
    # stage overrides over everything, for that stage only; each stage fully resolved
    txt, img = b.stages
    assert (txt.steps, txt.sampler) == (40, "DPM++ 2M")
    assert (img.steps, img.sampler, img.denoising_strength) == (10, "Euler", 0.5)
    assert (img.width, img.height, img.cfg_scale) == (640, 512, 5.5)


def test_generation_defaults_none_reads_the_settings_file(
    write_pack: WritePack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    settings = tmp_path / "settings.yaml"
    settings.write_text("generation:\n  steps: 33\n", encoding="utf-8")
    monkeypatch.setenv("STABLENEW_SETTINGS_FILE", str(settings))
    (rec,) = build_jobs(write_pack("pack: s\nprompts: [{text: a}]\n"))
    assert rec.steps == 33
