"""Integrity of what is submitted and what a pack may ask for: a ``job_id`` must be the id
the record's content gives; records are validated at submission however they were made
(``model_copy``, ``model_construct``, dicts), all or nothing; a pack may only lower the
installation's ``limits.max_jobs``; a pack's ``wildcards:`` folder (and what is under it)
stays inside the pack's folder, the bundled wildcards or ``limits.wildcard_roots``."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest

from stablenew.builder import build_jobs, count_jobs, validate_pack
from stablenew.errors import (
    InvalidRecords,
    JobIdMismatch,
    PackError,
    PackIssue,
    SubmissionError,
)
from stablenew.orchestration.services.submission import validate_records
from stablenew.records import NormalizedJobRecord, compute_job_id, revalidate
from stablenew.settings import get_settings
from tests.core.conftest import WritePack

ROOT = Path(__file__).resolve().parents[2]
BUNDLED = sorted((ROOT / "configs" / "packs").glob("*.yaml"))


def _record(prompt: str = "a red fox", **over: Any) -> NormalizedJobRecord:
    fields: dict[str, Any] = {
        "pack_id": "integrity",
        "pack_hash": "0123456789abcdef",
        "row_index": 0,
        "prompt": prompt,
        "seed": 7,
        "model": "v1-5-pruned-emaonly",
        "sampler": "Euler a",
        "steps": 20,
        "cfg_scale": 7.0,
        "width": 512,
        "height": 512,
        "stages": [
            {
                "type": "txt2img",
                "sampler": "Euler a",
                "steps": 20,
                "cfg_scale": 7.0,
                "width": 512,
                "height": 512,
            }
        ],
    }
    fields.update(over)
    return NormalizedJobRecord.model_validate(fields)


def _refused(records: list[Any]) -> InvalidRecords:
    with pytest.raises(InvalidRecords) as caught:
        validate_records(records)
    assert isinstance(caught.value, SubmissionError)
    return caught.value


# -- job_id ------------------------------------------------------------------------------


def test_a_job_id_the_content_does_not_give_is_refused_naming_job_and_expected_id() -> None:
    for pack in BUNDLED:  # what the builder makes passes as it is
        records = list(build_jobs(pack, generation_defaults={}))
        assert validate_records(records) == records, pack.name
    done = _record("a red fox")
    forged = done.model_copy(update={"prompt": "something else entirely"})
    assert forged.job_id == done.job_id  # model_copy keeps the id: the forgery of issue 13
    expected = compute_job_id(forged.content_dict())

    error = _refused([_record("an innocent bystander"), forged])
    (problem,) = error.problems
    assert (problem.index, problem.job_id, problem.field) == (1, done.job_id, "job_id")
    assert expected in problem.expected
    assert done.job_id in str(error)
    assert expected in str(error)
    assert "nothing queued" in str(error)

    with pytest.raises(JobIdMismatch) as mismatch:
        revalidate(forged)
    assert (mismatch.value.job_id, mismatch.value.expected) == (done.job_id, expected)


def test_a_dict_with_a_forged_job_id_is_refused() -> None:
    done = _record("a red fox")
    other = _record("a blue fox").content_dict()
    error = _refused([{**other, "job_id": done.job_id}])
    assert error.problems[0].field == "job_id"
    assert compute_job_id(other) in str(error)


def test_an_id_equal_to_the_content_hash_passes_and_an_empty_one_is_derived() -> None:
    rec = _record()
    unnamed = NormalizedJobRecord.model_construct(**{**rec.content_dict(), "job_id": ""})
    assert validate_records([rec]) == [rec]
    (derived,) = validate_records([unnamed])
    assert derived.job_id == rec.job_id
    (from_dict,) = validate_records([rec.content_dict()])
    assert from_dict == rec


# -- validation whatever way a record was made ----------------------------------------------


def test_model_copy_with_an_invalid_value_is_refused_at_submission() -> None:
    rec = _record()
    bad = rec.model_copy(update={"steps": 0, "job_id": ""})
    error = _refused([bad])
    assert [p.field for p in error.problems] == ["steps"]
    assert "greater than or equal to 1" in error.problems[0].expected


def test_model_construct_with_missing_or_wrong_fields_is_refused_all_or_nothing() -> None:
    rec = _record()
    content = rec.content_dict()
    missing = NormalizedJobRecord.model_construct(
        **{k: v for k, v in content.items() if k != "model"}
    )
    wrong = NormalizedJobRecord.model_construct(**{**content, "width": "wide", "job_id": ""})
    error = _refused([rec, missing, wrong])  # the valid one is not returned either
    fields = {(p.index, p.field) for p in error.problems}
    assert fields == {(1, "model"), (2, "width")}
    assert "record #1" in str(error)
    assert "record #2" in str(error)


def test_the_same_job_twice_in_one_call_is_refused() -> None:
    rec = _record()
    error = _refused([rec, rec.content_dict()])
    assert error.problems[0].index == 1
    assert "already in this submission" in str(error)


# -- limits.max_jobs -------------------------------------------------------------------------

BIG_PACK = """
pack: huge
defaults: {images_per_prompt: 10}
matrix:
  slots:
    a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16]
    c: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]
prompts:
  - text: "${a} ${b} ${c} {v|w|x|y|z|q|r|s|t|u} {1|2|3|4|5|6|7|8|9|10}"
limits:
  max_jobs: 3000000
"""


def _issue(path: Path) -> PackIssue:
    with pytest.raises(PackError) as caught:
        validate_pack(path, generation_defaults={})
    (issue,) = caught.value.issues
    return issue


def test_a_pack_cannot_raise_its_job_limit_above_the_installation(write_pack: WritePack) -> None:
    path = write_pack(BIG_PACK)
    assert count_jobs(path, generation_defaults={}) == 2_560_000  # counted, never enforced
    issue = _issue(path)
    assert (issue.path, issue.line, issue.field) == (str(path), 11, "limits.max_jobs")
    assert "10,000" in issue.expected
    assert "3,000,000" in issue.expected
    with pytest.raises(PackError):
        next(build_jobs(path, generation_defaults={}))


def test_raising_it_is_refused_even_for_a_small_pack(write_pack: WritePack) -> None:
    path = write_pack("pack: small\nprompts: [{text: a}]\nlimits: {max_jobs: 10001}\n")
    issue = _issue(path)
    assert (issue.line, issue.field) == (3, "limits.max_jobs")


def test_the_installation_may_allow_more(
    write_pack: WritePack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STABLENEW_LIMITS__MAX_JOBS", "5000000")
    assert validate_pack(write_pack(BIG_PACK), generation_defaults={}) == 2_560_000
    unlimited = BIG_PACK.replace("limits:\n  max_jobs: 3000000\n", "")
    assert "limits" not in unlimited  # no limit of its own: the installation's applies
    assert validate_pack(write_pack(unlimited), generation_defaults={}) == 2_560_000


def test_the_effective_limit_is_the_lower_of_pack_and_installation(
    write_pack: WritePack, monkeypatch: pytest.MonkeyPatch
) -> None:
    six = "pack: six\ndefaults: {images_per_prompt: 6}\nprompts: [{text: a}]\n"
    monkeypatch.setenv("STABLENEW_LIMITS__MAX_JOBS", "5")
    issue = _issue(write_pack(six))  # no limits key: the installation's 5 applies
    assert issue.field == "limits.max_jobs"
    assert "at most limits.max_jobs = 5 jobs (the installation's)" in issue.expected
    monkeypatch.setenv("STABLENEW_LIMITS__MAX_JOBS", "100")
    get_settings.cache_clear()
    assert validate_pack(write_pack(six), generation_defaults={}) == 6
    issue = _issue(write_pack(six + "limits: {max_jobs: 4}\n"))  # the pack lowers it
    assert (issue.line, issue.field) == (4, "limits.max_jobs")
    assert "= 4 jobs;" in issue.expected


# -- wildcards: ------------------------------------------------------------------------------

PROMPT = "pack: wc\nwildcards: {folder}\nprompts: [{{text: 'a __animal__'}}]\n"


def _outside(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("elsewhere")
    (folder / "animal.txt").write_text("secret\n", encoding="utf-8")
    return folder


def _wildcard_issue(path: Path) -> PackIssue:
    with pytest.raises(PackError) as caught:
        list(build_jobs(path, generation_defaults={}))
    (issue,) = caught.value.issues
    assert (issue.path, issue.line, issue.field) == (str(path), 2, "wildcards")
    assert "inside the pack's folder" in issue.expected
    assert "limits.wildcard_roots" in issue.expected
    return issue


def test_an_absolute_wildcard_folder_elsewhere_is_refused_unless_a_configured_root(
    write_pack: WritePack,
    monkeypatch: pytest.MonkeyPatch,
    tmp_path_factory: pytest.TempPathFactory,
) -> None:
    outside = _outside(tmp_path_factory)
    path = write_pack(PROMPT.format(folder=json.dumps(str(outside))))
    issue = _wildcard_issue(path)
    assert str(outside) in issue.expected
    # unless the installation names a root that holds it
    monkeypatch.setenv("STABLENEW_LIMITS__WILDCARD_ROOTS", json.dumps([str(outside.parent)]))
    get_settings.cache_clear()
    assert [r.prompt for r in build_jobs(path, generation_defaults={})] == ["a secret"]


def test_a_dotdot_escape_is_refused_but_the_bundled_packs_build(
    write_pack: WritePack, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (tmp_path / "wildcards").mkdir()
    (tmp_path / "wildcards" / "animal.txt").write_text("fox\n", encoding="utf-8")
    pack = tmp_path / "sub" / "pack.yaml"
    pack.parent.mkdir()
    pack.write_text(PROMPT.format(folder="../wildcards"), encoding="utf-8")
    _wildcard_issue(pack)
    # the same folder named from the pack's own folder is fine
    inside = write_pack(PROMPT.format(folder="wildcards"))
    assert [r.prompt for r in build_jobs(inside, generation_defaults={})] == ["a fox"]
    # the bundled packs name ../wildcards, the wildcards that ship with StableNew
    monkeypatch.chdir(tmp_path)  # found from the pack's folder, not the working directory
    for pack in BUNDLED:
        assert validate_pack(pack, generation_defaults={}) > 0, pack.name


def test_a_symlinked_folder_pointing_out_is_refused(
    write_pack: WritePack, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    (tmp_path / "wildcards").symlink_to(_outside(tmp_path_factory), target_is_directory=True)
    _wildcard_issue(write_pack(PROMPT.format(folder="wildcards")))


def test_links_out_of_the_folder_inside_it_are_refused(
    write_pack: WritePack, tmp_path: Path, tmp_path_factory: pytest.TempPathFactory
) -> None:
    outside = _outside(tmp_path_factory)
    path = write_pack(PROMPT.format(folder="wildcards"), wildcards={"plant": "fern\n"})
    (tmp_path / "wildcards" / "animal.txt").symlink_to(outside / "animal.txt")
    issue = _wildcard_issue(path)
    assert "animal.txt" in issue.expected
    (tmp_path / "wildcards" / "animal.txt").unlink()
    (tmp_path / "wildcards" / "more").symlink_to(outside, target_is_directory=True)
    _wildcard_issue(path)
