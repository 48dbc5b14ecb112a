"""What the simulated WebUI has installed: checkpoints, VAEs, samplers, upscalers, LoRAs, ...

Loaded from the packaged ``inventory.yaml`` and optionally a user file that replaces whole
sections. Lookups here follow A1111's rules (checkpoint aliases, sampler/scheduler resolution).
"""

from __future__ import annotations

import hashlib
from importlib import resources
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ConfigDict, Field

from stablenew.errors import ConfigError

MODELS_DIR = "/sd/models"


class _Item(BaseModel):
    model_config = ConfigDict(extra="forbid")


def _sha(name: str, given: str | None) -> str:
    return given or hashlib.sha256(name.encode()).hexdigest()


class Checkpoint(_Item):
    name: str = Field(description="model_name: the file name without extension.")
    file: str = Field(description="File name relative to the models folder.")
    sha256: str | None = Field(default=None, description="Full sha256; derived from name if unset.")

    @property
    def hash(self) -> str:
        return _sha(self.name, self.sha256)[:10]

    @property
    def full_sha(self) -> str:
        return _sha(self.name, self.sha256)

    @property
    def title(self) -> str:
        return f"{self.file} [{self.hash}]"

    @property
    def aliases(self) -> set[str]:
        """The ids A1111's ``checkpoint_aliases`` knows a checkpoint by."""
        stem = self.file.rsplit(".", 1)[0]
        return {
            self.title,
            self.file,
            self.name,
            stem,
            self.hash,
            self.full_sha,
            f"{self.file} [{self.hash}]",
        }


class Vae(_Item):
    name: str
    file: str
    sha256: str | None = None

    @property
    def hash(self) -> str:
        return _sha(self.name, self.sha256)[:10]


class Sampler(_Item):
    name: str
    aliases: list[str] = Field(default_factory=list)
    options: dict[str, str] = Field(default_factory=dict)


class Scheduler(_Item):
    name: str
    label: str
    aliases: list[str] | None = None
    default_rho: float = -1.0
    need_inner_model: bool = False


class Upscaler(_Item):
    name: str
    model_name: str | None = None
    scale: float = 4.0


class Lora(_Item):
    name: str
    alias: str | None = None
    sha256: str | None = None


class PromptStyle(_Item):
    name: str
    prompt: str = ""
    negative_prompt: str = ""


class Extension(_Item):
    """An installed extension that adds an always-on script (ControlNet, ADetailer, ...)."""

    name: str = Field(description="Folder name under extensions/, e.g. 'sd-webui-controlnet'.")
    title: str = Field(description="Title of its always-on script, e.g. 'ControlNet'.")
    remote: str = Field(default="", description="Git remote URL.")
    branch: str = "main"
    version: str = Field(default="", description="Short commit or release tag.")
    txt2img: bool = Field(default=True, description="Whether the script shows in txt2img.")
    img2img: bool = Field(default=True, description="Whether the script shows in img2img.")
    scripts: list[str] = Field(
        default_factory=list, description="Selectable scripts it adds (titles); run as plain jobs."
    )
    models: list[str] = Field(default_factory=list, description="Models it lists (e.g. CN).")
    modules: list[str] = Field(default_factory=list, description="Preprocessors it lists.")


class Inventory(_Item):
    """Everything the list endpoints serve."""

    models: list[Checkpoint] = Field(min_length=1)
    vaes: list[Vae] = Field(default_factory=list)
    samplers: list[Sampler] = Field(min_length=1)
    schedulers: list[Scheduler] = Field(min_length=1)
    upscalers: list[Upscaler] = Field(default_factory=list)
    latent_upscale_modes: list[str] = Field(default_factory=list)
    loras: list[Lora] = Field(default_factory=list)
    embeddings: list[str] = Field(default_factory=list)
    prompt_styles: list[PromptStyle] = Field(default_factory=list)
    face_restorers: list[str] = Field(default_factory=list)
    extensions: list[Extension] = Field(default_factory=list)

    def checkpoint(self, name: str | None) -> Checkpoint | None:
        """Exact alias match, as A1111's ``checkpoint_aliases.get``."""
        if not name:
            return None
        return next((m for m in self.models if name in m.aliases), None)

    def vae(self, name: str | None) -> Vae | None:
        if not name:
            return None
        return next((v for v in self.vaes if name in (v.file, v.name)), None)

    def upscaler(self, name: str | None) -> Upscaler | None:
        return next((u for u in self.upscalers if u.name == name), None)

    def resolve_sampler(self, sampler: str | None, scheduler: str | None) -> tuple[str, str]:
        """A1111 1.10 ``get_sampler_and_scheduler`` plus the label the sampler really uses.

        A trailing scheduler label/name/alias is split off the sampler name; the sampler is
        matched by exact display name, unknown ones fall back silently to the first sampler
        (``DPM++ 2M``), unknown schedulers to ``Automatic``. The returned label is what the
        infotext shows: ``Automatic`` becomes the sampler's default scheduler, if it has one.
        """
        automatic = self.schedulers[0]
        found = next(
            (s for s in self.schedulers if scheduler in (s.name, s.label, *(s.aliases or []))),
            automatic,
        )
        name = sampler or ""
        for sched in self.schedulers:
            for option in (sched.label, sched.name, *(sched.aliases or [])):
                if name.endswith(" " + option):
                    found, name = sched, name[: -(len(option) + 1)]
                    break
            else:
                continue
            break
        resolved = next((s for s in self.samplers if s.name == name), self.samplers[0])
        if found is automatic and "scheduler" in resolved.options:
            default = resolved.options["scheduler"]
            found = next((s for s in self.schedulers if s.name == default), automatic)
        return resolved.name, found.label

    def apply_styles(self, prompt: str, negative: str, styles: list[str]) -> tuple[str, str]:
        """A1111 prompt styles: ``{prompt}`` placeholder, else appended with ``, ``."""
        for style_name in styles:
            style = next((s for s in self.prompt_styles if s.name == style_name), None)
            if style is None:
                continue
            prompt = _apply_style(style.prompt, prompt)
            negative = _apply_style(style.negative_prompt, negative)
        return prompt, negative


def _apply_style(style_text: str, text: str) -> str:
    if not style_text:
        return text
    if "{prompt}" in style_text:
        return style_text.replace("{prompt}", text)
    return f"{text}, {style_text}" if text else style_text


def _read(text: str, source: str) -> dict[str, Any]:
    try:
        data = yaml.safe_load(text)
    except yaml.YAMLError as e:
        raise ConfigError(f"not valid YAML: {e}", source=source) from e
    if not isinstance(data, dict):
        raise ConfigError("expected a mapping of inventory sections", source=source)
    return data


def load_inventory(path: Path | str | None = None) -> Inventory:
    """The packaged defaults, with the sections of ``path`` (YAML or JSON) replacing them."""
    packaged = resources.files("stablenew.webui.simulator").joinpath("inventory.yaml")
    data = _read(packaged.read_text(encoding="utf-8"), "inventory.yaml (packaged)")
    if path is not None:
        source = str(path)
        try:
            text = Path(path).read_text(encoding="utf-8")
        except OSError as e:
            raise ConfigError(f"cannot read inventory: {e.strerror}", source=source) from e
        data.update(_read(text, source))
    else:
        source = "inventory.yaml (packaged)"
    try:
        return Inventory.model_validate(data)
    except ValueError as e:
        raise ConfigError(str(e), source=source) from e
