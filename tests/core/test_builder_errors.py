"""Build-time checks: unknown slots, missing wildcards, limits; a bad pack yields nothing."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stablenew.builder import build_jobs, count_jobs, validate_pack
from stablenew.errors import PackError, PackIssue

WritePack = Callable[..., Path]


def _build_issues(path: Path) -> list[PackIssue]:
    with pytest.raises(PackError) as info:
        build_jobs(path, generation_defaults={})  # raises before returning the iterator
    return list(info.value.issues)


def test_unknown_slot_names_prompt_line_and_suggests(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: slots
        matrix:
          slots: {animal: [fox, owl]}
        prompts:
          - text: a ${animl} at night
          - text: fine ${animal}
            negative: no ${colour}
        """
    )
    text, negative = _build_issues(path)
    assert (text.line, text.field) == (5, "prompts[0].text")
    assert "did you mean ${animal}?" in text.expected
    assert (negative.line, negative.field) == (7, "prompts[1].negative")


def test_slot_without_a_matrix(write_pack: WritePack) -> None:
    (issue,) = _build_issues(write_pack("pack: s\nprompts: [{text: 'a ${x}'}]\n"))
    assert "no matrix" in issue.expected


def test_missing_wildcard_file_names_prompt_line(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: wc
        wildcards: wildcards
        prompts:
          - text: a __animals__
          - text: a __colors__ thing
        """,
        wildcards={"animals": "cat\n"},
    )
    (issue,) = _build_issues(path)
    assert (issue.line, issue.field) == (5, "prompts[1].text")
    assert "__colors__" in issue.expected


def test_over_max_jobs_is_an_error_not_a_truncation(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: big
        defaults: {images_per_prompt: 6}
        prompts:
          - text: "{a|b}"
        limits:
          max_jobs: 10
        """
    )
    (issue,) = _build_issues(path)
    assert (issue.line, issue.field) == (6, "limits.max_jobs")
    assert "12" in issue.expected
    assert count_jobs(path, generation_defaults={}) == 12  # count reports, never enforces


def test_default_job_limit_applies_without_a_limits_key(write_pack: WritePack) -> None:
    path = write_pack("pack: big\ndefaults: {images_per_prompt: 10001}\nprompts: [{text: a}]\n")
    (issue,) = _build_issues(path)
    assert issue.field == "limits.max_jobs"
    assert "10,000" in issue.expected


def test_over_max_megapixels_points_at_the_size_source(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: mp
        defaults: {width: 2304, height: 2304}
        prompts:
          - text: a
          - text: b
            settings: {width: 512, height: 512}
        stages:
          - type: txt2img
          - type: upscale
            upscaler: Lanczos
            scale: 4
        """
    )
    issues = _build_issues(path)
    assert [(i.field, i.line) for i in issues] == [("defaults", 2), ("stages[1]", 9)]
    assert "4.2 MP" in issues[0].expected


def test_bad_settings_file_layer_is_reported(write_pack: WritePack) -> None:
    path = write_pack("pack: s\nprompts: [{text: a}]\n")
    with pytest.raises(PackError) as info:
        validate_pack(path, generation_defaults={"stepz": 3})
    (issue,) = info.value.issues
    assert (issue.path, issue.field) == ("settings file", "generation.stepz")


def test_all_build_problems_come_together(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: many
        wildcards: wildcards
        prompts:
          - text: __nope__
          - text: ${missing}
        """
    )
    assert [i.line for i in _build_issues(path)] == [4, 5]
