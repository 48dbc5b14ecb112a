"""Preflight: a record naming something the WebUI lacks fails before any GPU time is spent,
naming the field; a valid record passes. Before queueing, a pack's unknown names become one
PackIssue per name, at its line, with the nearest known name, and alongside the pack's other
problems. Runs over real HTTP against the simulator."""

from __future__ import annotations

import re
import socket
from pathlib import Path
from typing import Any

import pytest

from stablenew.builder import build_jobs
from stablenew.errors import PackError, PackIssue, WebUIRequestRejected, WebUIUnreachable
from stablenew.packs import load_pack
from stablenew.records import LoraRef, NormalizedJobRecord, StageSpec
from stablenew.webui import WebUIClient
from stablenew.webui.preflight import (
    WebUIInventory,
    build_and_check,
    check_names,
    check_record,
    fetch_inventory,
)

PACKS = sorted((Path(__file__).resolve().parents[2] / "configs" / "packs").glob("*.yaml"))


def _record(**over: Any) -> NormalizedJobRecord:
    sampler = over.pop("stage_sampler", "DPM++ 2M Karras")
    fields: dict[str, Any] = {
        "pack_id": "pre",
        "pack_hash": "f" * 16,
        "row_index": 0,
        "prompt": "a lighthouse",
        "seed": 1,
        "model": "v1-5-pruned-emaonly",
        "sampler": sampler,
        "steps": 2,
        "cfg_scale": 7.0,
        "width": 64,
        "height": 64,
        "stages": [
            StageSpec(
                type="txt2img",
                sampler=sampler,
                scheduler="Karras",
                steps=2,
                cfg_scale=7,
                width=64,
                height=64,
            ),
            StageSpec(type="upscale", upscaler=over.pop("upscaler", "Lanczos"), scale=2),
        ],
    }
    fields.update(over)
    return NormalizedJobRecord(**fields)


def test_known_names_pass(client: WebUIClient) -> None:
    inventory = WebUIInventory.fetch(client)
    check_record(client, _record(), inventory)
    assert inventory.problems(_record()) == []


@pytest.mark.parametrize(
    ("over", "field", "needle"),
    [
        ({"model": "no-such-model"}, "model", "no-such-model"),
        ({"stage_sampler": "Eulerr a"}, "stages[0].sampler", "Eulerr a"),
        ({"upscaler": "Mega 9x"}, "stages[1].upscaler", "Mega 9x"),
        ({"vae": "nope.vae.pt"}, "vae", "nope.vae.pt"),
        ({"loras": [LoraRef(name="ghost")]}, "loras", "ghost"),
    ],
)
def test_unknown_names_are_rejected_with_the_field(
    client: WebUIClient, over: dict[str, Any], field: str, needle: str
) -> None:
    inventory = WebUIInventory.fetch(client)
    with pytest.raises(WebUIRequestRejected) as caught:
        check_record(client, _record(**over), inventory)
    assert caught.value.field == field
    assert needle in str(caught.value)
    assert caught.value.retryable is False


# -- names of whole packs --------------------------------------------------------------------

TYPOS = """\
pack: typos
defaults:
  model: sd_xl_base_1.1
  vae: sdxl_vae.safetensor
  sampler: Eulr a
  width: 64
  height: 64
  images_per_prompt: 3
prompts:
  - text: a {red|blue} fox
    loras:
      - name: add_detial
        weight: 0.5
    embeddings: [easynegativ]
  - text: a lighthouse
    settings:
      sampler: DPM++ 2M Karas
"""


def _write(tmp_path: Path, text: str, name: str = "pack.yaml") -> Path:
    path = tmp_path / name
    path.write_text(text, encoding="utf-8")
    return path


@pytest.fixture
def inventory(client: WebUIClient) -> WebUIInventory:
    return WebUIInventory.fetch(client)


def test_vae_by_file_name_or_stem_and_sampler_with_scheduler_are_known(
    inventory: WebUIInventory,
) -> None:
    # A1111 lists a VAE under its file name; the simulator under its stem: both are accepted.
    for vae in ("sdxl_vae.safetensors", "sdxl_vae", "Automatic"):
        assert inventory.problems(_record(vae=vae)) == []
    assert inventory.knows("sampler", "DPM++ 2M SGM Uniform")
    assert inventory.knows("sampler", "DPM++ 2M sgm_uniform")
    assert not inventory.knows("sampler", "DPM++ 2M Karas")


@pytest.mark.parametrize("sampler", ["k_euler_a", "euler a", "Euler a Karas"])
def test_samplers_are_matched_exactly_as_a1111_does(
    inventory: WebUIInventory, sampler: str
) -> None:
    # A1111 1.10 would silently render these with DPM++ 2M: they must not pass.
    assert not inventory.knows("sampler", sampler)
    assert inventory.suggest("sampler", sampler) in ("Euler a", "Euler a Karras")


def test_embeddings_are_listed_and_checked(client: WebUIClient, inventory: WebUIInventory) -> None:
    assert "easynegative" in client.embeddings()["loaded"]
    assert inventory.problems(_record(embeddings=("easynegative",))) == []
    assert inventory.problems(_record(embeddings=("easynegativ",))) == [
        ("embeddings", "embedding 'easynegativ' is not on the WebUI; did you mean 'easynegative'?")
    ]


def test_check_names_gives_one_issue_per_unknown_name_at_its_line(
    tmp_path: Path, inventory: WebUIInventory
) -> None:
    path = _write(tmp_path, TYPOS)
    pack = load_pack(path)
    records = list(build_jobs(pack, generation_defaults={}))
    assert len(records) == 9
    issues = check_names(records, inventory, source=pack)
    assert [str(i) for i in issues] == [
        f"{path}:3: defaults.model: a checkpoint the WebUI has, not 'sd_xl_base_1.1' "
        "(used by 9 jobs); did you mean 'sd_xl_base_1.0'?",
        f"{path}:4: defaults.vae: a VAE the WebUI has, not 'sdxl_vae.safetensor' "
        "(used by 9 jobs); did you mean 'sdxl_vae.safetensors'?",
        f"{path}:5: defaults.sampler: a sampler the WebUI has, not 'Eulr a' "
        "(used by 6 jobs); did you mean 'Euler a'?",
        f"{path}:12: prompts[0].loras[0].name: a LoRA the WebUI has, not 'add_detial' "
        "(used by 6 jobs); did you mean 'add_detail'?",
        f"{path}:14: prompts[0].embeddings[0]: an embedding the WebUI has, not 'easynegativ' "
        "(used by 6 jobs); did you mean 'easynegative'?",
        f"{path}:17: prompts[1].settings.sampler: a sampler the WebUI has, not 'DPM++ 2M Karas' "
        "(used by 3 jobs); did you mean 'DPM++ 2M Karras'?",
    ]
    assert all(isinstance(i, PackIssue) for i in issues)


def test_check_names_without_the_pack_names_the_record_field_and_rows(
    tmp_path: Path, inventory: WebUIInventory
) -> None:
    path = _write(tmp_path, TYPOS)
    records = build_jobs(path, generation_defaults={})
    issues = check_names(records, inventory, source=path)
    first = issues[0]
    assert (first.path, first.line, first.field) == (str(path), None, "model")
    assert "(prompt rows 0, 1)" in first.expected
    assert [i.field for i in issues].count("stages[0].sampler") == 2  # two distinct names


def test_a_name_from_the_settings_layer_is_reported_as_such(
    tmp_path: Path, inventory: WebUIInventory
) -> None:
    path = _write(tmp_path, "pack: plain\nprompts:\n  - text: a fox\n")
    records = build_jobs(path, generation_defaults={"model": "v1-5-pruned-emaonyl"})
    (issue,) = check_names(records, inventory, source=load_pack(path))
    assert (issue.line, issue.field) == (None, "model")
    assert "not set in the pack" in issue.expected
    assert "did you mean 'v1-5-pruned-emaonly'?" in issue.expected


@pytest.mark.parametrize(
    ("broken", "problem"),
    [
        ("  stepz: 3\n", "defaults.stepz: unknown key 'stepz'; did you mean 'steps'?"),
        ("", "prompts[0].text: a defined matrix slot, not ${season}"),
    ],
    ids=["schema", "slot"],
)
def test_build_and_check_reports_pack_and_name_problems_in_one_pass(
    tmp_path: Path, inventory: WebUIInventory, broken: str, problem: str
) -> None:
    text = TYPOS.replace("  height: 64\n", "  height: 64\n" + broken)
    if not broken:
        text = text.replace("a {red|blue} fox", "a ${season} fox")
    path = _write(tmp_path, text)
    with pytest.raises(PackError) as caught:
        build_and_check(path, inventory, generation_defaults={})
    shown = [str(i) for i in caught.value.issues]
    assert any(problem in s for s in shown), shown
    for name in ("sd_xl_base_1.1", "add_detial", "easynegativ", "Eulr a", "DPM++ 2M Karas"):
        assert sum(f"not {name!r}" in s for s in shown) == 1, (name, shown)
    assert any(":5: defaults.sampler:" in s for s in shown)


def test_build_and_check_without_inventory_is_the_plain_build(tmp_path: Path) -> None:
    path = _write(tmp_path, TYPOS)
    assert len(build_and_check(path, None, generation_defaults={})) == 9


@pytest.mark.parametrize("pack", PACKS, ids=[p.stem for p in PACKS])
def test_every_bundled_pack_is_clean_against_the_simulator(
    inventory: WebUIInventory, pack: Path
) -> None:
    assert build_and_check(pack, inventory, generation_defaults={})


def test_fetch_inventory_of_a_webui_that_does_not_answer_names_the_url() -> None:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    url = f"http://127.0.0.1:{port}"
    with pytest.raises(WebUIUnreachable, match=re.escape(url)) as caught:
        fetch_inventory(url, timeout=2)
    assert caught.value.retryable


def test_a_name_shared_by_several_stages_is_one_issue_counting_jobs_once(
    tmp_path: Path, inventory: WebUIInventory
) -> None:
    stages = "stages:\n  - type: txt2img\n  - type: img2img\n    denoising_strength: 0.4\n"
    path = _write(tmp_path, TYPOS + stages)
    pack = load_pack(path)
    issues = check_names(build_jobs(pack, generation_defaults={}), inventory, source=pack)
    (sampler,) = [i for i in issues if i.field == "defaults.sampler"]
    assert "(used by 6 jobs)" in sampler.expected


# -- scripts, extensions and hires fix --------------------------------------------------------

_EXT_PACK = """\
pack: ext
defaults: {steps: 2, width: 64, height: 64}
prompts:
  - text: a fox
stages:
  - type: txt2img
    hires: {scale: 1.5, upscaler: Latent (bicubic), sampler: Euler a}
    alwayson_scripts:
      ControlNet: {args: [{module: canny}]}
      FaceFixer: {args: [true]}
  - type: img2img
    denoising_strength: 0.3
    script: {name: SD upscale, args: ["", 8, Lanczos, 2]}
"""


def test_scripts_extensions_and_hires_names_are_checked(
    tmp_path: Path, client: WebUIClient, control: Any, inventory: WebUIInventory
) -> None:
    assert inventory.knows("txt2img always-on script", "controlnet")
    assert inventory.knows("img2img script", "SD upscale")
    assert not inventory.knows("txt2img script", "SD upscale")  # img2img only
    assert inventory.knows("hires upscaler", "Latent (bicubic)")
    path = tmp_path / "ext.yaml"
    path.write_text(_EXT_PACK)
    with pytest.raises(PackError) as info:
        build_and_check(path, inventory, generation_defaults={})
    (issue,) = info.value.issues
    assert issue.field == "stages[0].alwayson_scripts.FaceFixer"
    assert issue.line == 10
    assert "a txt2img always-on script the WebUI has, not 'FaceFixer'" in issue.expected
    # At run time the worker's check refuses the job before any generation.
    (record,) = build_jobs(load_pack(path), generation_defaults={})
    with pytest.raises(WebUIRequestRejected, match="FaceFixer"):
        check_record(client, record, inventory)
    assert control.stats()["counters"]["requests"] == 0
    path.write_text(_EXT_PACK.replace("FaceFixer", "ADetailer").replace("SD upscale", "Loopbak"))
    with pytest.raises(PackError) as info:
        build_and_check(path, inventory, generation_defaults={})
    (issue,) = info.value.issues
    assert issue.field == "stages[1].script.name"
    assert issue.expected.endswith("did you mean 'loopback'?")
    path.write_text(_EXT_PACK.replace("FaceFixer", "ADetailer"))
    assert len(build_and_check(path, inventory, generation_defaults={})) == 1


def test_a_webui_without_script_info_is_not_checked_for_scripts(
    inventory: WebUIInventory,
) -> None:
    from dataclasses import replace

    blind = replace(inventory, scripts=None)
    assert blind.knows("txt2img always-on script", "anything")
