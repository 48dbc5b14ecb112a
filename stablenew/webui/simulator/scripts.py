"""The scripts a simulated A1111 1.10 has: the selectable ones it ships (``script_name``), its
built-in always-on ones, and those of installed extensions (``alwayson_scripts``).

Lookups refuse names as A1111's ``Api.get_selectable_script`` / ``get_script`` do (422
``Script 'x' not found``; a selectable title among always-on ones is its own 422), and
:func:`alwayson_params` turns the ControlNet / ADetailer args of a request into the infotext
entries those extensions write. What each selectable script does to a job is in ``script_runs``.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from fastapi import HTTPException

from stablenew.webui.simulator.inventory import Inventory

Tab = str  # "txt2img" | "img2img"


@dataclass(frozen=True)
class Arg:
    """One entry of ``/script-info`` ``args``: a UI control of the script."""

    label: str
    value: Any = None
    minimum: float | None = None
    maximum: float | None = None
    step: float | None = None
    choices: list[str] | None = None

    def as_json(self) -> dict[str, Any]:
        return {
            "label": self.label,
            "value": self.value,
            "minimum": self.minimum,
            "maximum": self.maximum,
            "step": self.step,
            "choices": self.choices,
        }


@dataclass(frozen=True)
class Script:
    title: str
    alwayson: bool
    tabs: tuple[Tab, ...]
    args: tuple[Arg, ...] = ()
    extension: str | None = None  # folder name of the extension that adds it
    version: str = ""  # the extension's version, as it writes it into infotexts
    runs_as_plain_job: bool = field(default=False, compare=False)


_BOTH = ("txt2img", "img2img")
_XYZ_ARGS = (
    *(
        arg
        for axis in ("X", "Y", "Z")
        for arg in (
            Arg(f"{axis} type", 0),
            Arg(f"{axis} values", ""),
            Arg(f"{axis} values (dropdown)", []),
        )
    ),
    Arg("Draw legend", True),
    Arg("Keep -1 for seeds", False),
    Arg("Vary seeds for X", False),
    Arg("Vary seeds for Y", False),
    Arg("Vary seeds for Z", False),
    Arg("Include Sub Images", False),
    Arg("Include Sub Grids", False),
    Arg("Grid margins (px)", 0, 0, 500, 2),
    Arg("Use text inputs instead of dropdowns", False),
)

# Selectable scripts A1111 1.10 ships (scripts/*.py), in its order, with their API arguments.
BUILTIN_SELECTABLE = (
    Script(
        "Prompt matrix",
        False,
        _BOTH,
        (
            Arg("Put variable parts at start of prompt", False),
            Arg("Use different seed for each picture", False),
            Arg("Select prompt", "positive", choices=["positive", "negative"]),
            Arg("Select joining char", "comma", choices=["comma", "space"]),
            Arg("Grid margins (px)", 0, 0, 500, 2),
        ),
    ),
    Script(
        "Prompts from file or textbox",
        False,
        _BOTH,
        (
            Arg("Iterate seed every line", False),
            Arg("Use same random seed for all lines", False),
            Arg("Insert prompts at the", "start", choices=["start", "end"]),
            Arg("List of prompt inputs", ""),
        ),
    ),
    Script("X/Y/Z plot", False, _BOTH, _XYZ_ARGS),
    Script(
        "img2img alternative test",
        False,
        ("img2img",),
        (
            Arg("Override `Sampling method` to Euler?", True),
            Arg("Override `prompt` to the same value as `original prompt`?", True),
            Arg("Original prompt", ""),
            Arg("Original negative prompt", ""),
            Arg("Override `Sampling Steps` to the same value as `Decode steps`?", True),
            Arg("Decode steps", 50, 1, 150, 1),
            Arg("Override `Denoising strength` to 1?", True),
            Arg("Decode CFG scale", 1.0, 0.0, 15.0, 0.1),
            Arg("Randomness", 0.0, 0.0, 1.0, 0.01),
            Arg("Sigma adjustment for finding noise for image", False),
        ),
        runs_as_plain_job=True,
    ),
    Script(
        "Loopback",
        False,
        ("img2img",),
        (
            Arg("Loops", 4, 1, 32, 1),
            Arg("Final denoising strength", 0.5, 0, 1, 0.01),
            Arg("Denoising strength curve", "Linear", choices=["Aggressive", "Linear", "Lazy"]),
            Arg("Append interrogated prompt at each iteration", "None", choices=["None", "CLIP"]),
        ),
    ),
    Script(
        "Outpainting mk2",
        False,
        ("img2img",),
        (
            Arg("Pixels to expand", 128, 8, 256, 8),
            Arg("Mask blur", 8, 0, 64, 1),
            Arg("Outpainting direction", ["left", "right", "up", "down"]),
            Arg("Fall-off exponent (lower=higher detail)", 1.0, 0.0, 4.0, 0.01),
            Arg("Color variation", 0.05, 0.0, 1.0, 0.01),
        ),
        runs_as_plain_job=True,
    ),
    Script(
        "Poor man's outpainting",
        False,
        ("img2img",),
        (
            Arg("Pixels to expand", 128, 8, 256, 8),
            Arg("Mask blur", 4, 0, 64, 1),
            Arg("Masked content", "fill", choices=["fill", "original", "latent noise"]),
            Arg("Outpainting direction", ["left", "right", "up", "down"]),
        ),
        runs_as_plain_job=True,
    ),
    Script(
        "SD upscale",
        False,
        ("img2img",),
        (
            Arg("Info", None),
            Arg("Tile overlap", 64, 0, 256, 16),
            Arg("Upscaler", "None"),
            Arg("Scale Factor", 2.0, 1.0, 4.0, 0.05),
        ),
    ),
)

# Always-on scripts A1111 1.10 ships (modules/processing_scripts, built-in extensions).
BUILTIN_ALWAYSON = (
    Script("Extra options", True, _BOTH),
    Script(
        "Hypertile",
        True,
        _BOTH,
    ),
    Script("Comments", True, _BOTH),
    Script(
        "Refiner",
        True,
        _BOTH,
        (Arg("Refiner", False), Arg("Checkpoint", ""), Arg("Switch at", 0.8, 0.01, 1.0, 0.01)),
    ),
    Script(
        "Sampler",
        True,
        _BOTH,
        (Arg("Sampling steps", 20, 1, 150, 1), Arg("Sampling method", "DPM++ 2M")),
    ),
    Script(
        "Seed",
        True,
        _BOTH,
        (
            Arg("Seed", -1),
            Arg("Extra", False),
            Arg("Variation seed", -1),
            Arg("Variation strength", 0.0, 0, 1, 0.01),
            Arg("Resize seed from width", 0, 0, 2048, 8),
            Arg("Resize seed from height", 0, 0, 2048, 8),
        ),
    ),
    Script("Soft Inpainting", True, ("img2img",)),
)


def catalogue(inventory: Inventory) -> list[Script]:
    """Every script of the simulated WebUI: built-in ones, then each extension's."""
    scripts = [*BUILTIN_SELECTABLE, *BUILTIN_ALWAYSON]
    for ext in inventory.extensions:
        tabs = tuple(t for t, on in (("txt2img", ext.txt2img), ("img2img", ext.img2img)) if on)
        scripts.append(Script(ext.title, True, tabs, extension=ext.name, version=ext.version))
        scripts += [
            Script(title, False, tabs, extension=ext.name, runs_as_plain_job=True)
            for title in ext.scripts
        ]
    return scripts


def listing(inventory: Inventory) -> dict[str, list[str]]:
    """``GET /scripts``: lower-cased titles per tab (selectable and always-on alike)."""
    return {
        tab: [s.title.lower() for s in catalogue(inventory) if tab in s.tabs]
        for tab in ("txt2img", "img2img")
    }


def script_info(inventory: Inventory) -> list[dict[str, Any]]:
    """``GET /script-info``: one entry per script and tab it shows in."""
    return [
        {
            "name": s.title.lower(),
            "is_alwayson": s.alwayson,
            "is_img2img": tab == "img2img",
            "args": [a.as_json() for a in s.args],
        }
        for tab in ("txt2img", "img2img")
        for s in catalogue(inventory)
        if tab in s.tabs
    ]


def _not_found(name: str) -> HTTPException:
    return HTTPException(status_code=422, detail=f"Script '{name}' not found")


def selectable(inventory: Inventory, tab: Tab, name: str | None) -> Script | None:
    """The ``script_name`` script (matched case-insensitively), ``None`` for none; 422 if
    the tab has no such selectable script."""
    if not name:
        return None
    for s in catalogue(inventory):
        if not s.alwayson and tab in s.tabs and s.title.lower() == name.lower():
            return s
    raise _not_found(name)


def alwayson(inventory: Inventory, tab: Tab, requested: dict[str, Any]) -> list[tuple[Script, Any]]:
    """The ``alwayson_scripts`` entries as ``(script, args)``; 422 as A1111 refuses them."""
    found: list[tuple[Script, Any]] = []
    for name, value in requested.items():
        script = next(
            (s for s in catalogue(inventory) if tab in s.tabs and s.title.lower() == name.lower()),
            None,
        )
        if script is None:
            raise _not_found(name)
        if not script.alwayson:
            raise HTTPException(
                status_code=422,
                detail="Cannot have a selectable script in the always on scripts params",
            )
        args = value.get("args", []) if isinstance(value, dict) else []
        found.append((script, args if isinstance(args, list) else []))
    return found


# -- what extensions write into the infotext -------------------------------------------------

_ORDINALS = {1: "2nd", 2: "3rd"}


def alwayson_params(scripts: list[tuple[Script, Any]]) -> dict[str, Any]:
    """Infotext entries of the ControlNet and ADetailer units in ``scripts``."""
    params: dict[str, Any] = {}
    for script, args in scripts:
        title = script.title.lower()
        if title == "controlnet":
            params.update(_controlnet(args))
        elif title == "adetailer":
            params.update(_adetailer(args, script.version))
    return params


def _controlnet(args: list[Any]) -> dict[str, str]:
    units = [u for u in args if isinstance(u, dict) and u.get("enabled", True)]
    out: dict[str, str] = {}
    for i, unit in enumerate(units):
        res = unit.get("processor_res", -1)
        fields = {
            "Module": unit.get("module", "none"),
            "Model": unit.get("model", "None"),
            "Weight": float(unit.get("weight", 1.0)),
            "Resize Mode": unit.get("resize_mode", "Crop and Resize"),
            "Processor Res": 512 if res in (None, -1) else res,
            "Threshold A": unit.get("threshold_a", -1),
            "Threshold B": unit.get("threshold_b", -1),
            "Guidance Start": float(unit.get("guidance_start", 0.0)),
            "Guidance End": float(unit.get("guidance_end", 1.0)),
            "Pixel Perfect": bool(unit.get("pixel_perfect", False)),
            "Control Mode": unit.get("control_mode", "Balanced"),
        }
        out[f"ControlNet {i}"] = ", ".join(f"{k}: {v}" for k, v in fields.items())
    return out


_AD_DEFAULTS: tuple[tuple[str, str, Any], ...] = (
    ("ad_prompt", "prompt", ""),
    ("ad_negative_prompt", "negative prompt", ""),
    ("ad_confidence", "confidence", 0.3),
    ("ad_dilate_erode", "dilate erode", 4),
    ("ad_mask_blur", "mask blur", 4),
    ("ad_denoising_strength", "denoising strength", 0.4),
    ("ad_inpaint_only_masked", "inpaint only masked", True),
    ("ad_inpaint_padding", "inpaint padding", 32),
)


def _adetailer(args: list[Any], version: str) -> dict[str, Any]:
    """ADetailer's args: optional leading ``enable`` / ``skip img2img`` booleans, then units."""
    if args and isinstance(args[0], bool) and not args[0]:
        return {}
    units = [u for u in args if isinstance(u, dict) and u.get("ad_model", "None") != "None"]
    out: dict[str, Any] = {}
    for i, unit in enumerate(units):
        suffix = "" if i == 0 else f" {_ORDINALS.get(i, f'{i + 1}th')}"
        out[f"ADetailer model{suffix}"] = unit.get("ad_model", "face_yolov8n.pt")
        for key, label, default in _AD_DEFAULTS:
            value = unit.get(key, default)
            if value != "" and value is not None:
                out[f"ADetailer {label}{suffix}"] = value
    if units and version:
        out["ADetailer version"] = version
    return out
