"""Submission order: jobs that share a checkpoint are grouped, otherwise the pack order holds."""

from __future__ import annotations

from stablenew import build_jobs, load_pack
from stablenew.ordering import group_by_model, model_switches
from tests.core.conftest import WritePack

MIXED = """
pack: mixed
prompts:
  - text: a fox
    settings: {model: alpha}
  - text: a cat
    settings: {model: beta}
  - text: an owl
    settings: {model: alpha, vae: vae-ft-mse}
  - text: a dog
    settings: {model: alpha}
  - text: a hen
    settings: {model: beta}
"""


def test_groups_by_checkpoint_and_vae_in_first_seen_order(write_pack: WritePack) -> None:
    records = list(build_jobs(load_pack(write_pack(MIXED))))
    order = group_by_model(records)
    grouped = [records[i] for i in order]

    assert [r.prompt for r in grouped] == ["a fox", "a dog", "a cat", "a hen", "an owl"]
    assert sorted(order) == list(range(len(records)))  # a permutation: nothing lost
    assert model_switches(records) == 4
    assert model_switches(grouped) == 2


def test_single_model_pack_keeps_its_order(write_pack: WritePack) -> None:
    records = list(build_jobs(load_pack(write_pack("pack: one\nprompts: [{text: a}, {text: b}]"))))
    assert group_by_model(records) == [0, 1]
    assert model_switches(records) == 0
    assert group_by_model([]) == []
    assert model_switches([]) == 0
