"""NormalizedJobRecord: self-validation, derived ids, lossless JSON round trip."""

from __future__ import annotations

from typing import Any

import pytest
from pydantic import ValidationError

from stablenew import NormalizedJobRecord, StageSpec


def _fields(**over: Any) -> dict[str, Any]:
    base: dict[str, Any] = {
        "pack_id": "demo",
        "pack_hash": "0123456789abcdef",
        "row_index": 2,
        "prompt": "a red fox in snow",
        "seed": 1234,
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
            },
        ],
    }
    base.update(over)
    return base


def test_job_id_is_derived_from_content_and_stable() -> None:
    a = NormalizedJobRecord(**_fields())
    b = NormalizedJobRecord(**_fields(clip_skip=1))  # explicit default: same content
    c = NormalizedJobRecord(**_fields(seed=1235))
    assert a.job_id == b.job_id
    assert a.job_id != c.job_id
    assert a.job_id.startswith("demo-2-0-0-0-")
    assert a.run_name == "demo/2-0-0-0"


def test_json_round_trip_is_lossless() -> None:
    rec = NormalizedJobRecord(**_fields(matrix_slot_values={"animal": "fox"}))
    again = NormalizedJobRecord.model_validate_json(rec.model_dump_json())
    assert again == rec
    assert again.model_dump_json() == rec.model_dump_json()


def test_record_is_frozen() -> None:
    rec = NormalizedJobRecord(**_fields())
    with pytest.raises(ValidationError):
        rec.seed = 5  # type: ignore[misc]


@pytest.mark.parametrize(
    ("over", "needle"),
    [
        ({"prompt": "   "}, "prompt must not be blank"),
        ({"prompt": ""}, "prompt"),
        ({"stages": []}, "stages"),
        ({"width": 500}, "multiple of 8"),
        ({"height": 16}, "multiple of 8"),
        (
            {"stages": [{"type": "upscale", "upscaler": "Lanczos", "scale": 2}]},
            "start with txt2img",
        ),
        ({"stages": [{"type": "txt2img"}]}, "missing sampler"),
        ({"seed": -1}, "seed"),
        ({"pack_id": "Bad Id"}, "pack_id"),
        ({"unknown_field": 1}, "unknown_field"),
    ],
)
def test_bad_hand_built_records_are_rejected(over: dict[str, Any], needle: str) -> None:
    with pytest.raises(ValidationError, match=needle):
        NormalizedJobRecord(**_fields(**over))


def test_stage_requirements_per_type() -> None:
    with pytest.raises(ValidationError, match="denoising_strength"):
        StageSpec(type="img2img", sampler="Euler", steps=10, cfg_scale=5, width=512, height=512)
    with pytest.raises(ValidationError, match="upscaler and scale"):
        StageSpec(type="upscale", upscaler="Lanczos")
    ok = StageSpec(type="upscale", upscaler="Lanczos", scale=2)
    assert ok.scale == 2


def test_stage_extras_are_left_out_of_the_content_until_used() -> None:
    plain = NormalizedJobRecord(**_fields())
    assert set(plain.content_dict()["stages"][0]) == {
        "type", "sampler", "scheduler", "steps", "cfg_scale", "width", "height",
        "denoising_strength", "upscaler", "scale",
    }  # fmt: skip
    stage = {
        **_fields()["stages"][0],
        "hires": {"scale": 1.5, "denoising_strength": 0.4},
        "script": {"name": "X/Y/Z plot", "args": [4, "1,2", None]},
        "alwayson_scripts": {"ControlNet": {"args": [{"module": "canny", "image": None}]}},
    }
    rich = NormalizedJobRecord(**_fields(stages=[stage]))
    assert rich.job_id != plain.job_id
    again = NormalizedJobRecord.model_validate_json(rich.model_dump_json())
    assert again == rich
    assert again.job_id == rich.job_id
    assert rich.stages[0].output_size == (768, 768)
    assert rich.content_dict()["stages"][0]["script"]["args"] == [4, "1,2", None]


def test_hires_and_scripts_belong_to_generation_stages() -> None:
    upscale = {"type": "upscale", "upscaler": "Lanczos", "scale": 2}
    with pytest.raises(ValidationError, match="hires fix belongs to a txt2img stage"):
        StageSpec(**{**upscale, "hires": {}})
    with pytest.raises(ValidationError, match="no script or alwayson_scripts"):
        StageSpec(**{**upscale, "script": {"name": "SD upscale"}})
