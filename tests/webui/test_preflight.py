"""Preflight: a record naming something the WebUI lacks fails before any GPU time is spent,
naming the field; a valid record passes. Runs over real HTTP against the simulator."""

from __future__ import annotations

from typing import Any

import pytest

from stablenew.errors import WebUIRequestRejected
from stablenew.records import LoraRef, NormalizedJobRecord, StageSpec
from stablenew.webui import WebUIClient
from stablenew.webui.preflight import WebUIInventory, check_record


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
