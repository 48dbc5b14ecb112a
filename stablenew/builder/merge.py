"""The one merge of generation settings, lowest precedence first.

built-in defaults < settings file (``Settings.generation``) < pack ``defaults``
< prompt ``settings`` < stage overrides.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

BUILTIN_DEFAULTS: Mapping[str, Any] = {
    "model": "v1-5-pruned-emaonly",
    "vae": None,
    "sampler": "Euler a",
    "scheduler": None,
    "steps": 20,
    "cfg_scale": 7.0,
    "width": 512,
    "height": 512,
    "clip_skip": 1,
    "batch_size": 1,
    "images_per_prompt": 1,
}


def merge_settings(*layers: Mapping[str, Any] | None) -> dict[str, Any]:
    """Merge layers given lowest precedence first; a key set to ``None`` counts as unset.

    >>> merge_settings({"steps": 20, "cfg_scale": 7.0}, None, {"steps": 30, "cfg_scale": None})
    {'steps': 30, 'cfg_scale': 7.0}
    """
    merged: dict[str, Any] = {}
    for layer in layers:
        if layer:
            merged.update((k, v) for k, v in layer.items() if v is not None)
    return merged
