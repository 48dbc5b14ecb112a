"""Built records: determinism, seed policies, validity of the fast path, streaming."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path

import pytest

from stablenew.builder import build_jobs
from stablenew.errors import PackError
from stablenew.records import MAX_SEED, NormalizedJobRecord

WritePack = Callable[..., Path]

PACK = """
pack: seeds
seed: {{base: {base}, policy: {policy}}}
defaults: {{images_per_prompt: 3}}
matrix: {{slots: {{a: [x, y]}}}}
prompts:
  - text: "${{a}} {{p|q}}"
"""


def _jsonl(path: Path) -> str:
    return "".join(r.model_dump_json() + "\n" for r in build_jobs(path, generation_defaults={}))


@pytest.mark.parametrize("pack", ["demo", "fox-matrix", "sdxl-portraits"])
def test_two_builds_are_byte_identical(pack: str) -> None:
    path = Path(f"configs/packs/{pack}.yaml")
    assert _jsonl(path) == _jsonl(path)


def test_fixed_seed_policy(write_pack: WritePack) -> None:
    path = write_pack(PACK.format(base=77, policy="fixed"))
    records = list(build_jobs(path, generation_defaults={}))
    assert {r.seed for r in records} == {77}
    assert {r.seed_policy for r in records} == {"fixed"}


def test_increment_seed_policy_wraps(write_pack: WritePack) -> None:
    path = write_pack(PACK.format(base=MAX_SEED - 1, policy="increment"))
    seeds = [r.seed for r in build_jobs(path, generation_defaults={})]
    assert seeds[:4] == [MAX_SEED - 1, MAX_SEED, 0, 1]
    assert len(seeds) == 12


def test_random_seed_policy_is_recorded_and_deterministic(write_pack: WritePack) -> None:
    path = write_pack(PACK.format(base=5, policy="random"))
    first = [r.seed for r in build_jobs(path, generation_defaults={})]
    again = [r.seed for r in build_jobs(path, generation_defaults={})]
    assert first == again
    assert len(set(first)) == len(first)
    assert all(0 <= s <= MAX_SEED for s in first)
    other = write_pack(PACK.format(base=6, policy="random"), name="other.yaml")
    assert [r.seed for r in build_jobs(other, generation_defaults={})] != first


def test_fast_path_records_equal_validated_records(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: exact
        title: "Quotes \\" and ünïcode {braces}"
        negative: 'no "x"'
        matrix: {slots: {a: ['{1}', "ü"]}}
        prompts:
          - text: 'say "${a}" {p|q}'
            loras: [{name: l, weight: 0.25}]
            embeddings: [e]
        stages:
          - type: txt2img
          - type: img2img
            denoising_strength: 0.3
          - type: upscale
            upscaler: R-ESRGAN 4x+
            scale: 2
        """
    )
    records = list(build_jobs(path, generation_defaults={"cfg_scale": 7}))
    assert len(records) == 4
    for rec in records:
        again = NormalizedJobRecord.model_validate_json(rec.model_dump_json())
        assert again == rec
        assert again.model_dump_json() == rec.model_dump_json()
        rebuilt = NormalizedJobRecord.model_validate(rec.model_dump(exclude={"job_id"}))
        assert rebuilt.job_id == rec.job_id
    assert records[0].cfg_scale == 7.0
    assert isinstance(records[0].cfg_scale, float)


def test_job_ids_are_unique_and_readable(write_pack: WritePack) -> None:
    path = write_pack(PACK.format(base=1, policy="fixed"))
    records = list(build_jobs(path, generation_defaults={}))
    assert len({r.job_id for r in records}) == len(records)
    assert records[5].job_id.startswith(
        f"seeds-0-{records[5].combo_index}-{records[5].variant_index}-{records[5].batch_index}-"
    )


def test_records_carry_pack_identity_and_resolved_stages() -> None:
    rec = next(build_jobs("configs/packs/fox-matrix.yaml", generation_defaults={}))
    raw = Path("configs/packs/fox-matrix.yaml").read_bytes()
    import hashlib

    assert rec.pack_hash == hashlib.sha256(raw).hexdigest()
    assert rec.pack_id == "fox-matrix"
    txt, img, up = rec.stages
    assert (txt.sampler, txt.scheduler, txt.steps) == ("DPM++ 2M", "Karras", 25)
    assert (img.steps, img.denoising_strength, img.width) == (15, 0.35, 512)
    assert (up.upscaler, up.scale, up.sampler) == ("R-ESRGAN 4x+", 2.0, None)


def test_build_streams_lazily(write_pack: WritePack, monkeypatch: pytest.MonkeyPatch) -> None:
    # A pack may only lower the installation's job limit: raise that one.
    monkeypatch.setenv("STABLENEW_LIMITS__MAX_JOBS", "1000000000")
    path = write_pack(
        """
        pack: stream
        limits: {max_jobs: 1000000000}
        defaults: {images_per_prompt: 1000}
        matrix: {slots: {a: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10], b: [1, 2, 3, 4, 5, 6, 7, 8, 9, 10]}}
        prompts:
          - text: "${a} ${b} {c|d|e|f|g|h|i|j|k|l}"
        """
    )
    jobs = build_jobs(path, generation_defaults={})  # a million jobs: nothing built yet
    first = list(itertools.islice(jobs, 3))
    assert [r.batch_index for r in first] == [0, 1, 2]


def test_hires_scripts_and_extensions_reach_the_record(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: ext
        defaults: {width: 512, height: 512}
        limits: {max_megapixels: 1.0}
        prompts:
          - text: a fox
        stages:
          - type: txt2img
            hires: {scale: 1.5, denoising_strength: 0.4}
            alwayson_scripts:
              ADetailer: {args: [true, false, {ad_model: face_yolov8n.pt, ad_prompt: null}]}
          - type: img2img
            denoising_strength: 0.3
            script: {name: SD upscale, args: ["", 8, Lanczos, 2.0]}
        """
    )
    (record,) = build_jobs(path, generation_defaults={})
    txt2img, img2img = record.stages
    assert txt2img.hires is not None
    assert txt2img.hires.scale == 1.5
    assert txt2img.alwayson_scripts is not None
    assert txt2img.alwayson_scripts["ADetailer"].args[2] == {
        "ad_model": "face_yolov8n.pt",
        "ad_prompt": None,  # passed through as written, None included
    }
    assert img2img.script is not None
    assert img2img.script.name == "SD upscale"
    assert img2img.hires is None
    too_big = path.read_text().replace("scale: 1.5", "scale: 2.5")
    path.write_text(too_big)
    with pytest.raises(PackError, match=r"stage 0 \(txt2img\) makes 1\.64 MP"):
        list(build_jobs(path, generation_defaults={}))
