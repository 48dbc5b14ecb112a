"""Editing a job's record: values checked with the builder's and loader's own messages and
limits, inherited stage settings follow the edit while a stage's own override stays, and the
edited record is a new job (its own id), equal to what validating its content gives."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stablenew.builder import build_jobs
from stablenew.errors import PackError, PackIssue
from stablenew.orchestration.services.record_edit import edit_record, parse_assignments
from stablenew.packs.model import Limits
from stablenew.records import NormalizedJobRecord
from tests.core.history_support import make_record

WritePack = Callable[..., Path]


def _issues(
    record: NormalizedJobRecord, changes: dict[str, object], **kw: object
) -> list[PackIssue]:
    with pytest.raises(PackError) as info:
        edit_record(record, changes, **kw)  # type: ignore[arg-type]
    return list(info.value.issues)


def test_an_edit_is_a_new_valid_job_with_inherited_stages_following() -> None:
    rec = make_record()
    assert rec.stages[0].steps == rec.steps == 20
    edited = edit_record(rec, parse_assignments(["steps=30", "cfg_scale=6", "sampler=DPM++ 2M"]))
    assert (edited.steps, edited.cfg_scale, edited.sampler) == (30, 6.0, "DPM++ 2M")
    assert (edited.stages[0].steps, edited.stages[0].sampler) == (30, "DPM++ 2M")
    assert edited.job_id != rec.job_id
    assert edited == NormalizedJobRecord.model_validate(edited.content_dict())
    assert edited.model_copy(update={"job_id": ""}).content_dict() == edited.content_dict()


def test_a_stage_override_is_kept() -> None:
    rec = make_record()
    stages = [rec.stages[0].model_dump(), {**rec.stages[0].model_dump(), "type": "img2img",
              "steps": 12, "denoising_strength": 0.4}]  # fmt: skip
    rec = NormalizedJobRecord.model_validate({**rec.content_dict(), "stages": stages})
    edited = edit_record(rec, {"steps": 40})
    assert [s.steps for s in edited.stages] == [40, 12]


def test_bad_values_get_the_loaders_messages(write_pack: WritePack, tmp_path: Path) -> None:
    rec = make_record()
    got = {i.field: i.expected for i in _issues(rec, {"steps": 9999, "width": 500})}
    path = write_pack(
        """
        pack: bad
        defaults: {steps: 9999, width: 500}
        prompts: [{text: a fox}]
        """
    )
    with pytest.raises(PackError) as info:
        build_jobs(path, generation_defaults={})
    want = {i.field.removeprefix("defaults."): i.expected for i in info.value.issues}
    assert got == want


def test_unknown_keys_nothing_changed_and_limits(write_pack: WritePack) -> None:
    rec = make_record()
    (unknown,) = _issues(rec, {"stpes": 30})
    assert "did you mean 'steps'?" in unknown.expected
    (same,) = _issues(rec, {"steps": 20})
    assert "a change" in same.expected
    (big,) = _issues(rec, {"width": 4096, "height": 4096})
    assert "limits.max_megapixels = 4.2 MP" in big.expected
    (small,) = _issues(rec, {"width": 1024}, limits=Limits(max_megapixels=0.3))
    assert "0.52 MP" in small.expected
    (missing,) = _issues(rec, {"steps": None})
    assert missing.expected == "a value (this key is required)"
    assert edit_record(rec, {"vae": None, "seed": 5}).seed == 5
