"""Expansion: matrix modes, dynamic prompts (combinatorial, random, wildcards), prompt mapping."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

import pytest

from stablenew.builder import build_jobs, count_jobs

WritePack = Callable[..., Path]
CONFIG_PACKS = sorted(Path("configs/packs").glob("*.yaml"))


def _prompts(path: Path) -> list[str]:
    return [r.prompt for r in build_jobs(path, generation_defaults={})]


def test_cartesian_matrix_over_referenced_slots(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: cart
        matrix:
          mode: cartesian
          slots:
            animal: [fox, owl]
            style: [oil, ink, 3]
            unused: [x, y]
        prompts:
          - text: ${animal} in ${style}
          - text: no slots here
        """
    )
    records = list(build_jobs(path, generation_defaults={}))
    assert [r.prompt for r in records] == [
        "fox in oil", "fox in ink", "fox in 3", "owl in oil", "owl in ink", "owl in 3",
        "no slots here",
    ]  # fmt: skip
    assert records[4].matrix_slot_values == {"animal": "owl", "style": "ink"}
    assert [r.combo_index for r in records] == [0, 1, 2, 3, 4, 5, 0]
    assert records[-1].matrix_slot_values == {}


def test_zip_matrix_pairs_values_by_position(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: zipped
        matrix:
          mode: zip
          slots:
            animal: [fox, owl]
            place: [forest, barn]
        prompts:
          - text: a ${animal} in the ${place}
            negative: no ${place} walls
        """
    )
    records = list(build_jobs(path, generation_defaults={}))
    assert [r.prompt for r in records] == ["a fox in the forest", "a owl in the barn"]
    assert records[1].negative_prompt == "no barn walls"
    assert records[1].matrix_slot_values == {"animal": "owl", "place": "barn"}


def test_zip_needs_equal_lengths(write_pack: WritePack) -> None:
    from stablenew.errors import PackError

    path = write_pack(
        "pack: z\nmatrix: {mode: zip, slots: {a: [1, 2], b: [1]}}\nprompts: [{text: a}]\n"
    )
    with pytest.raises(PackError, match="equal length"):
        build_jobs(path, generation_defaults={})


def test_combinatorial_choices_nested_and_multi(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: combi
        prompts:
          - text: "{red|{dark|light} blue} fox"
          - text: "{2$$a|b|c}"
        """
    )
    assert _prompts(path) == [
        "red fox", "dark blue fox", "light blue fox",
        "a,b", "a,c", "b,a", "b,c", "c,a", "c,b",
    ]  # fmt: skip


def test_variants_caps_combinatorial_and_per_prompt_override(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: capped
        variants: 2
        prompts:
          - text: "{a|b|c}"
          - text: "{x|y|z}"
            variants: 1
        """
    )
    assert _prompts(path) == ["a", "b", "x"]
    assert count_jobs(path, generation_defaults={}) == 3


def test_wildcards_from_pack_dir_combinatorial(write_pack: WritePack) -> None:
    path = write_pack(
        "pack: wc\nwildcards: wildcards\nprompts: [{text: 'a __animal__ in __place__'}]\n",
        wildcards={"animal": "owl\nfox\n", "place": "{snow|rain}\n"},
    )
    # wildcard values are sorted (dynamicprompts) and may contain choices themselves
    assert _prompts(path) == ["a fox in snow", "a fox in rain", "a owl in snow", "a owl in rain"]


def test_default_wildcard_dir_is_configs_wildcards(write_pack: WritePack) -> None:
    path = write_pack("pack: wc\nprompts: [{text: 'a __foxes__'}]\n")
    assert _prompts(path) == ["a arctic fox", "a fennec fox", "a red fox"]


def test_random_mode_draws_variants_deterministically(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: rnd
        prompt_mode: random
        variants: 5
        wildcards: wildcards
        prompts:
          - text: "{a|b|c|d|e|f|g} __animal__"
        """,
        wildcards={"animal": "owl\nfox\ncat\n"},
    )
    first, second = _prompts(path), _prompts(path)
    assert first == second
    assert len(first) == 5
    assert len(set(first)) > 1
    assert all(p.split()[1] in {"owl", "fox", "cat"} for p in first)


def test_random_mode_without_variants_draws_one(write_pack: WritePack) -> None:
    path = write_pack("pack: rnd\nprompt_mode: random\nprompts: [{text: '{a|b}'}]\n")
    assert len(_prompts(path)) == 1


def test_prompt_mapping_loras_embeddings_negatives(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: mapped
        negative: lowres
        prompts:
          - text: "{a|b} fox"
            negative: blurry
            embeddings: [easynegative_pos, detail_ti]
            loras: [{name: add_detail, weight: 0.6}, {name: film, weight: 1}]
        """
    )
    rec = next(build_jobs(path, generation_defaults={}))
    assert rec.prompt == "a fox, easynegative_pos, detail_ti <lora:add_detail:0.6> <lora:film:1>"
    assert rec.prompt_template == "{a|b} fox"
    assert rec.negative_prompt == "blurry, lowres"
    assert [(lo.name, lo.weight) for lo in rec.loras] == [("add_detail", 0.6), ("film", 1.0)]
    assert rec.embeddings == ("easynegative_pos", "detail_ti")


def test_images_per_prompt_fans_out_batch_indexes(write_pack: WritePack) -> None:
    path = write_pack(
        "pack: b\ndefaults: {images_per_prompt: 3, batch_size: 2}\nprompts: [{text: a}]\n"
    )
    records = list(build_jobs(path, generation_defaults={}))
    assert [r.batch_index for r in records] == [0, 1, 2]
    assert {r.batch_size for r in records} == {2}
    assert len({r.job_id for r in records}) == 3


@pytest.mark.parametrize("path", CONFIG_PACKS, ids=lambda p: p.stem)
def test_count_equals_built_length_for_config_packs(path: Path) -> None:
    assert count_jobs(path, generation_defaults={}) == sum(
        1 for _ in build_jobs(path, generation_defaults={})
    )


def test_count_equals_built_length_for_a_mixed_pack(write_pack: WritePack) -> None:
    path = write_pack(
        """
        pack: mixed
        defaults: {images_per_prompt: 2}
        wildcards: wildcards
        matrix: {slots: {a: [1, 2, 3], b: [x, y]}}
        prompts:
          - text: "${a} {p|q|{r|s}} __w__"
          - text: "{1-2$$u|v|w} ${b}"
            settings: {images_per_prompt: 1}
          - text: plain
        """,
        wildcards={"w": "one\ntwo {three|four}\n"},
    )
    assert count_jobs(path, generation_defaults={}) == 3 * 4 * 3 * 2 + 9 * 2 + 2
    assert count_jobs(path, generation_defaults={}) == len(_prompts(path))


def test_config_packs_match_the_issue(write_pack: WritePack) -> None:
    fox = list(build_jobs("configs/packs/fox-matrix.yaml", generation_defaults={}))
    assert len({tuple(r.matrix_slot_values.items()) for r in fox}) == 6  # a 2x3 matrix
    assert [s.type for s in fox[0].stages] == ["txt2img", "img2img", "upscale"]
    assert "__" not in fox[0].prompt
    sdxl = next(build_jobs("configs/packs/sdxl-portraits.yaml", generation_defaults={}))
    assert (sdxl.model, sdxl.width, sdxl.height) == ("sd_xl_base_1.0", 1024, 1024)
    assert count_jobs("configs/packs/demo.yaml", generation_defaults={}) == 4
