"""The prompt pack format (YAML, version 1) as pydantic models.

Models are strict (no silent ``"20"`` → ``20``) and forbid unknown keys; every field has a
``description=`` so :func:`pack_json_schema` documents the format for editors.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal, Self

from pydantic import (
    BaseModel,
    BeforeValidator,
    ConfigDict,
    Field,
    ValidationInfo,
    field_validator,
    model_validator,
)

from stablenew.records import MAX_SEED, SeedPolicy, StageType

PACK_ID_PATTERN = r"^[a-z0-9][a-z0-9_-]*$"
SLOT_NAME_PATTERN = r"^[A-Za-z_][A-Za-z0-9_]*$"
PromptMode = Literal["combinatorial", "random"]
MatrixMode = Literal["cartesian", "zip"]


def _scalar_text(v: Any) -> Any:
    # Slot values are text; YAML numbers (`- 1.5`) are accepted and kept as written.
    if isinstance(v, int | float) and not isinstance(v, bool):
        return str(v)
    return v


SlotValue = Annotated[str, BeforeValidator(_scalar_text)]


class _PackModel(BaseModel):
    model_config = ConfigDict(extra="forbid", strict=True, frozen=True)


class _SamplingSettings(_PackModel):
    """Settings of one generation call: shared by defaults, prompt settings and stages."""

    sampler: str | None = Field(default=None, min_length=1, description="e.g. 'DPM++ 2M'.")
    scheduler: str | None = Field(default=None, description="e.g. 'Karras' or 'Automatic'.")
    steps: int | None = Field(default=None, ge=1, le=500, description="Sampling steps.")
    cfg_scale: float | None = Field(default=None, ge=0, le=100, description="CFG scale.")
    width: int | None = Field(default=None, description="Pixels, multiple of 8 in 64..8192.")
    height: int | None = Field(default=None, description="Pixels, multiple of 8 in 64..8192.")

    @field_validator("width", "height")
    @classmethod
    def _check_size(cls, v: int | None) -> int | None:
        if v is not None and (not 64 <= v <= 8192 or v % 8):
            raise ValueError(f"a multiple of 8 in 64..8192, got {v}")
        return v


GENERATION_STAGE_KEYS = tuple(_SamplingSettings.model_fields)


class GenerationSettings(_SamplingSettings):
    """Generation settings; every key optional, later layers override earlier ones."""

    model: str | None = Field(
        default=None, min_length=1, description="Checkpoint title, e.g. 'sd_xl_base_1.0'."
    )
    vae: str | None = Field(default=None, description="VAE name; unset keeps the WebUI's.")
    clip_skip: int | None = Field(default=None, ge=1, le=12, description="CLIP skip.")
    batch_size: int | None = Field(
        default=None, ge=1, le=64, description="Images per WebUI call (one job)."
    )
    images_per_prompt: int | None = Field(
        default=None,
        ge=1,
        description="Jobs per resolved prompt, each with its own batch_index.",
    )


class SeedSpec(_PackModel):
    """How jobs get their seeds."""

    base: int = Field(default=0, ge=0, le=MAX_SEED, description="First / fixed seed.")
    policy: SeedPolicy = Field(
        default="increment",
        description="fixed: every job uses base; increment: base + job number; random: drawn "
        "from an RNG seeded by the pack id and base (deterministic).",
    )


class MatrixSpec(_PackModel):
    """Named slots a prompt references as ``${name}``; each combination becomes jobs."""

    mode: MatrixMode = Field(
        default="cartesian",
        description="cartesian: every combination of the referenced slots; zip: the i-th "
        "value of every slot together (all slots must have the same length).",
    )
    slots: dict[Annotated[str, Field(pattern=SLOT_NAME_PATTERN)], list[SlotValue]] = Field(
        min_length=1, description="Slot name → values (text)."
    )

    @model_validator(mode="after")
    def _check_slots(self) -> Self:
        empty = [name for name, values in self.slots.items() if not values]
        if empty:
            raise ValueError(f"slot(s) {', '.join(empty)} need at least one value")
        if self.mode == "zip" and len({len(v) for v in self.slots.values()}) > 1:
            lengths = ", ".join(f"{k}={len(v)}" for k, v in self.slots.items())
            raise ValueError(f"zip mode needs slots of equal length, got {lengths}")
        return self


class GridSpec(_PackModel):
    """Which matrix slots the contact sheet (``stablenew grid``) puts on its axes."""

    x: str = Field(pattern=SLOT_NAME_PATTERN, description="Matrix slot across (columns).")
    y: str | None = Field(
        default=None, pattern=SLOT_NAME_PATTERN, description="Matrix slot down (rows)."
    )

    @model_validator(mode="after")
    def _distinct(self) -> Self:
        if self.x == self.y:
            raise ValueError(f"x and y must be different slots, both are {self.x!r}")
        return self


class LoraSpec(_PackModel):
    """A LoRA applied to one prompt."""

    name: str = Field(min_length=1, description="LoRA name as the WebUI lists it.")
    weight: float = Field(default=1.0, ge=-10, le=10, description="Strength.")


class PromptSpec(_PackModel):
    """One prompt row of the pack."""

    text: str = Field(
        min_length=1,
        description="Prompt text; dynamic-prompts syntax ({a|b}, __wildcard__) and ${slot}.",
    )
    negative: str = Field(default="", description="This prompt's negative, before the pack's.")
    loras: list[LoraSpec] = Field(
        default_factory=list, description="Appended to the prompt as <lora:name:weight>."
    )
    embeddings: list[Annotated[str, Field(min_length=1)]] = Field(
        default_factory=list, description="Textual-inversion names, appended to the prompt text."
    )
    settings: GenerationSettings = Field(
        default_factory=GenerationSettings, description="Overrides of the pack's defaults."
    )
    variants: int | None = Field(
        default=None, ge=1, description="Overrides the pack's `variants` for this prompt."
    )


class ScriptSpec(_PackModel):
    """A selectable WebUI script for the stage (A1111 ``script_name`` / ``script_args``)."""

    name: str = Field(
        min_length=1, description="Script title as the WebUI lists it, e.g. 'SD upscale'."
    )
    args: list[Any] = Field(
        default_factory=list, description="The script's args, in its order (see /script-info)."
    )


class AlwaysOnSpec(_PackModel):
    """Args of one always-on script (an extension such as ControlNet or ADetailer)."""

    args: list[Any] = Field(default_factory=list, description="Passed to the script as given.")


class HiresSpec(_PackModel):
    """Hires fix of the txt2img stage: a second pass at a larger size (A1111 ``enable_hr``)."""

    scale: float = Field(default=2.0, gt=0, le=8, description="Upscale factor (hr_scale).")
    resize_x: int = Field(
        default=0, ge=0, le=8192, description="Target width (hr_resize_x); 0: use scale."
    )
    resize_y: int = Field(
        default=0, ge=0, le=8192, description="Target height (hr_resize_y); 0: use scale."
    )
    upscaler: str = Field(
        default="Latent", min_length=1, description="hr_upscaler: a latent mode or an upscaler."
    )
    steps: int = Field(
        default=0, ge=0, le=500, description="Second-pass steps; 0: as many as the first pass."
    )
    denoising_strength: float = Field(
        default=0.7, ge=0, le=1, description="Denoising strength of the second pass."
    )
    sampler: str | None = Field(default=None, description="Second-pass sampler; unset: same.")
    scheduler: str | None = Field(default=None, description="Second-pass scheduler; unset: same.")
    checkpoint: str | None = Field(default=None, description="Second-pass checkpoint.")
    prompt: str | None = Field(default=None, description="Second-pass prompt; unset: same.")
    negative_prompt: str | None = Field(default=None, description="Second-pass negative prompt.")


class StageOverride(_SamplingSettings):
    """One stage of the chain; unset keys come from the prompt's merged settings."""

    type: StageType = Field(description="txt2img (first), img2img or upscale.")
    denoising_strength: float | None = Field(
        default=None, gt=0, le=1, description="img2img only, required there: (0, 1]."
    )
    upscaler: str | None = Field(
        default=None, min_length=1, description="upscale only, required: e.g. 'R-ESRGAN 4x+'."
    )
    scale: float | None = Field(
        default=None, gt=0, le=8, description="upscale only, required: factor, e.g. 2."
    )
    hires: HiresSpec | None = Field(
        default=None, description="txt2img only: hires fix (sent as enable_hr and hr_*)."
    )
    script: ScriptSpec | None = Field(
        default=None, description="txt2img/img2img: a selectable script, e.g. SD upscale."
    )
    alwayson_scripts: dict[Annotated[str, Field(min_length=1)], AlwaysOnSpec] | None = Field(
        default=None,
        description="txt2img/img2img: always-on scripts by title, e.g. ControlNet: {args: [...]}.",
    )

    @model_validator(mode="after")
    def _check_type_keys(self) -> Self:
        if self.type == "img2img" and self.denoising_strength is None:
            raise ValueError("an img2img stage needs denoising_strength in (0, 1]")
        if self.type == "upscale":
            if self.upscaler is None or self.scale is None:
                raise ValueError("an upscale stage needs upscaler and scale")
            extra = [k for k in GENERATION_STAGE_KEYS if getattr(self, k) is not None]
            if extra:
                raise ValueError(f"an upscale stage takes only upscaler and scale, not {extra}")
        elif self.upscaler is not None or self.scale is not None:
            raise ValueError(f"upscaler/scale belong to an upscale stage, not {self.type}")
        if self.type != "img2img" and self.denoising_strength is not None:
            raise ValueError(f"denoising_strength belongs to an img2img stage, not {self.type}")
        if self.hires is not None and self.type != "txt2img":
            raise ValueError(f"hires belongs to a txt2img stage, not {self.type}")
        if self.type == "upscale" and (self.script is not None or self.alwayson_scripts):
            raise ValueError("an upscale stage takes no script or alwayson_scripts")
        return self


class Limits(_PackModel):
    """Safety limits; exceeding one is an error, never a truncation. ``max_jobs`` may only
    lower the installation's ``limits.max_jobs`` setting, never raise it."""

    max_jobs: int | None = Field(
        default=None,
        ge=1,
        description="Most jobs the pack may expand to; at most the installation's "
        "limits.max_jobs setting (default 10,000), which also applies when unset.",
    )
    max_megapixels: float = Field(
        default=4.2, gt=0, description="Largest image any stage may produce, in megapixels."
    )


def _default_stages() -> list[StageOverride]:
    return [StageOverride(type="txt2img")]


class PromptPack(_PackModel):
    """A prompt pack, format version 1."""

    pack: str = Field(pattern=PACK_ID_PATTERN, description="Pack id: [a-z0-9][a-z0-9_-]*.")
    version: Literal[1] = Field(default=1, description="Pack format version.")
    title: str | None = Field(default=None, description="Human title.")
    description: str | None = Field(default=None, description="Free text.")
    defaults: GenerationSettings = Field(
        default_factory=GenerationSettings, description="Generation settings for every job."
    )
    seed: SeedSpec = Field(default_factory=SeedSpec, description="Seed policy.")
    negative: str = Field(default="", description="Pack-wide negative, after each prompt's.")
    matrix: MatrixSpec | None = Field(default=None, description="Matrix slots.")
    grid: GridSpec | None = Field(
        default=None,
        description="Contact-sheet axes, e.g. {x: style, y: season}; default: the first two "
        "matrix slots. Other slots give one sheet per combination.",
    )
    prompt_mode: PromptMode = Field(
        default="combinatorial",
        description="combinatorial: every choice combination; random: `variants` seeded draws.",
    )
    variants: int | None = Field(
        default=None,
        ge=1,
        description="random: draws per prompt (default 1); combinatorial: keep the first N.",
    )
    wildcards: str | None = Field(
        default=None,
        min_length=1,
        description="Wildcard directory, relative to the pack file; it must lie inside the "
        "pack's folder, the bundled configs/wildcards or a folder of the limits.wildcard_roots "
        "setting (default: configs/wildcards).",
    )
    prompts: list[PromptSpec] = Field(min_length=1, description="The prompt rows.")
    stages: list[StageOverride] = Field(
        default_factory=_default_stages, min_length=1, description="Stage chain, txt2img first."
    )
    limits: Limits = Field(default_factory=Limits, description="Safety limits.")

    @field_validator("grid")
    @classmethod
    def _grid_names_slots(cls, grid: GridSpec | None, info: ValidationInfo) -> GridSpec | None:
        matrix = info.data.get("matrix")
        slots = list(matrix.slots) if isinstance(matrix, MatrixSpec) else []
        for axis in (grid.x, grid.y) if grid else ():
            if axis is not None and axis not in slots:
                raise ValueError(f"{axis!r} is not a matrix slot (slots: {slots})")
        return grid

    @field_validator("stages")
    @classmethod
    def _check_chain(cls, stages: list[StageOverride]) -> list[StageOverride]:
        types = [s.type for s in stages]
        if types and (types[0] != "txt2img" or "txt2img" in types[1:]):
            raise ValueError(f"a chain starting with txt2img (and only once), got {types}")
        return stages
