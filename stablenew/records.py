"""The normalized job record: the one immutable unit of work.

The builder produces records; the job service submits them unchanged as flow-run parameters;
the worker's stage runner builds WebUI requests from them alone; history stores them verbatim.
Nothing downstream merges defaults or resolves prompts again, so every field the WebUI call and
the history need is here, fully resolved.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from typing import Any, Literal, Self

from pydantic import (
    BaseModel,
    ConfigDict,
    Field,
    SerializerFunctionWrapHandler,
    model_serializer,
    model_validator,
)

from stablenew.errors import JobIdMismatch

BUILDER_VERSION = "1"
RECORD_SCHEMA_VERSION: Literal[1] = 1
MAX_SEED = 2**32 - 1

StageType = Literal["txt2img", "img2img", "upscale"]
SeedPolicy = Literal["fixed", "increment", "random"]


class _Frozen(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")


class LoraRef(_Frozen):
    name: str = Field(min_length=1, description="LoRA name as the WebUI lists it.")
    weight: float = Field(default=1.0, description="Strength, as in <lora:name:weight>.")


def _check_size(width: int, height: int, where: str) -> None:
    for label, v in (("width", width), ("height", height)):
        if not 64 <= v <= 8192 or v % 8:
            raise ValueError(f"{where}{label} must be a multiple of 8 in 64..8192, got {v}")


class ScriptRef(_Frozen):
    """A selectable WebUI script (``script_name`` / ``script_args``), e.g. SD upscale."""

    name: str = Field(min_length=1, description="Script title, matched ignoring case.")
    args: tuple[Any, ...] = Field(default=(), description="The script's args, in its order.")


class AlwaysOnScript(_Frozen):
    """One ``alwayson_scripts`` entry (an extension such as ControlNet or ADetailer)."""

    args: tuple[Any, ...] = Field(default=(), description="Passed to the script as given.")


class HiresFix(_Frozen):
    """Hires fix of a txt2img stage (A1111 ``enable_hr`` and its ``hr_*`` fields)."""

    scale: float = Field(default=2.0, gt=0, le=8, description="hr_scale (unless resized).")
    resize_x: int = Field(default=0, ge=0, le=8192, description="hr_resize_x; 0: use scale.")
    resize_y: int = Field(default=0, ge=0, le=8192, description="hr_resize_y; 0: use scale.")
    upscaler: str = Field(default="Latent", min_length=1, description="hr_upscaler.")
    steps: int = Field(default=0, ge=0, le=500, description="Second-pass steps; 0: same.")
    denoising_strength: float = Field(default=0.7, ge=0, le=1, description="Second pass.")
    sampler: str | None = Field(default=None, description="hr_sampler_name; unset: same.")
    scheduler: str | None = Field(default=None, description="hr_scheduler; unset: same.")
    checkpoint: str | None = Field(default=None, description="hr_checkpoint_name.")
    prompt: str | None = Field(default=None, description="hr_prompt; unset: same prompt.")
    negative_prompt: str | None = Field(default=None, description="hr_negative_prompt.")

    def output_size(self, width: int, height: int) -> tuple[int, int]:
        """The second pass's size, as A1111 computes it from the first pass's."""
        if self.resize_x == 0 and self.resize_y == 0:
            return int(width * self.scale), int(height * self.scale)
        if self.resize_y == 0:
            return self.resize_x, self.resize_x * height // width
        if self.resize_x == 0:
            return self.resize_y * width // height, self.resize_y
        return self.resize_x, self.resize_y


# Stage fields that are left out of a dump while unset, so records that do not use them keep
# the bytes (and job ids) they had before the fields existed.
_OPTIONAL_STAGE_FIELDS = ("hires", "script", "alwayson_scripts")


class StageSpec(_Frozen):
    """One WebUI call of the chain, with every parameter resolved.

    Generation stages (txt2img, img2img) carry sampler/steps/cfg/size; img2img also
    ``denoising_strength``; upscale carries ``upscaler`` and ``scale``.
    """

    type: StageType
    sampler: str | None = Field(default=None, description="Sampler display name.")
    scheduler: str | None = Field(default=None, description="Scheduler name or label.")
    steps: int | None = Field(default=None, ge=1, le=500)
    cfg_scale: float | None = Field(default=None, ge=0, le=100)
    width: int | None = None
    height: int | None = None
    denoising_strength: float | None = Field(default=None, gt=0, le=1)
    upscaler: str | None = Field(default=None, description="Upscaler name (extras).")
    scale: float | None = Field(default=None, gt=0, le=8)
    hires: HiresFix | None = Field(default=None, description="txt2img only: hires fix.")
    script: ScriptRef | None = Field(default=None, description="A selectable script.")
    alwayson_scripts: dict[str, AlwaysOnScript] | None = Field(
        default=None, description="Always-on scripts (extensions) by title."
    )

    @model_serializer(mode="wrap")
    def _omit_unset(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        data: dict[str, Any] = handler(self)
        for name in _OPTIONAL_STAGE_FIELDS:
            if data.get(name) is None:
                data.pop(name, None)
        return data

    @property
    def output_size(self) -> tuple[int, int] | None:
        """The size a generation stage's images come out at (hires fix included)."""
        if self.width is None or self.height is None:
            return None
        if self.hires is not None:
            return self.hires.output_size(self.width, self.height)
        return self.width, self.height

    @model_validator(mode="after")
    def _complete_for_type(self) -> Self:
        if self.type in ("txt2img", "img2img"):
            missing = [
                name
                for name in ("sampler", "steps", "cfg_scale", "width", "height")
                if getattr(self, name) is None
            ]
            if missing:
                raise ValueError(f"{self.type} stage is missing {', '.join(missing)}")
            _check_size(self.width or 0, self.height or 0, f"{self.type} stage ")
        if self.type == "img2img" and self.denoising_strength is None:
            raise ValueError("img2img stage needs denoising_strength in (0, 1]")
        if self.type == "upscale" and (self.upscaler is None or self.scale is None):
            raise ValueError("upscale stage needs upscaler and scale")
        if self.hires is not None and self.type != "txt2img":
            raise ValueError(f"hires fix belongs to a txt2img stage, not {self.type}")
        if self.type == "upscale" and (self.script or self.alwayson_scripts):
            raise ValueError("an upscale stage takes no script or alwayson_scripts")
        return self


class NormalizedJobRecord(_Frozen):
    """A complete, immutable job. ``job_id`` is derived from the content when not given.

    A given ``job_id`` is kept as it is here (stored records are read back unchanged); what
    is submitted is checked with :func:`revalidate`, which refuses an id the content does not
    give.
    """

    schema_version: Literal[1] = RECORD_SCHEMA_VERSION
    job_id: str = Field(default="", description="pack-row-combo-variant-batch-<content hash>")
    pack_id: str = Field(pattern=r"^[a-z0-9][a-z0-9_-]*$")
    pack_title: str | None = None
    pack_hash: str = Field(min_length=8, description="sha256 of the pack file bytes.")
    row_index: int = Field(ge=0, description="Index of the prompt in the pack's `prompts`.")
    combo_index: int = Field(default=0, ge=0, description="Matrix combination index.")
    variant_index: int = Field(default=0, ge=0, description="Dynamic-prompt variant index.")
    batch_index: int = Field(default=0, ge=0, description="Index within images_per_prompt.")
    prompt: str = Field(
        min_length=1,
        description="Positive prompt exactly as sent to the WebUI (LoRA tags included).",
    )
    negative_prompt: str = Field(default="", description="Negative prompt exactly as sent.")
    prompt_template: str = Field(
        default="", description="The pack's prompt text before matrix/wildcard resolution."
    )
    loras: tuple[LoraRef, ...] = ()
    embeddings: tuple[str, ...] = ()
    matrix_slot_values: dict[str, str] = Field(default_factory=dict)
    seed: int = Field(ge=0, le=MAX_SEED)
    seed_policy: SeedPolicy = "fixed"
    model: str = Field(min_length=1, description="Checkpoint title or name.")
    vae: str | None = None
    sampler: str = Field(min_length=1)
    scheduler: str | None = None
    steps: int = Field(ge=1, le=500)
    cfg_scale: float = Field(ge=0, le=100)
    width: int
    height: int
    clip_skip: int = Field(default=1, ge=1, le=12)
    batch_size: int = Field(default=1, ge=1, le=64, description="Images per WebUI call.")
    stages: tuple[StageSpec, ...] = Field(min_length=1)
    builder_version: str = BUILDER_VERSION

    @model_validator(mode="after")
    def _check(self) -> Self:
        if not self.prompt.strip():
            raise ValueError("prompt must not be blank")
        _check_size(self.width, self.height, "")
        if self.stages[0].type != "txt2img":
            raise ValueError(f"the stage chain must start with txt2img, not {self.stages[0].type}")
        if not self.job_id:
            # Frozen model: the id is set once, here, from the validated content.
            object.__setattr__(self, "job_id", compute_job_id(self.content_dict()))
        return self

    def content_dict(self) -> dict[str, Any]:
        """Every field except ``job_id``, JSON-ready; what the id's hash covers."""
        return self.model_dump(mode="json", exclude={"job_id"})

    def expected_job_id(self) -> str:
        """The id this record's content gives: what ``job_id`` must be."""
        return compute_job_id(self.content_dict())

    @property
    def run_name(self) -> str:
        """Human name of the job, used as the flow-run name."""
        return (
            f"{self.pack_id}/{self.row_index}-{self.combo_index}"
            f"-{self.variant_index}-{self.batch_index}"
        )


def derive_with_seed(record: NormalizedJobRecord, seed: int) -> NormalizedJobRecord:
    """The same job with another seed: a new record, validated, with its own id."""
    content = record.content_dict()
    content.update(seed=seed, seed_policy="fixed")
    return NormalizedJobRecord.model_validate(content)


def revalidate(item: NormalizedJobRecord | Mapping[str, Any]) -> NormalizedJobRecord:
    """``item`` as the worker will receive it: validated afresh from its JSON form, whatever
    way it was made (``model_copy(update=...)`` and ``model_construct`` skip validation),
    with a ``job_id`` that is the id its content gives (an empty one is derived).

    Raises ``ValueError``: pydantic's ``ValidationError`` for invalid or missing fields,
    :class:`~stablenew.errors.JobIdMismatch` for an id the content does not give.
    """
    if isinstance(item, NormalizedJobRecord):
        # warnings=False: a constructed record may hold values of the wrong type; validation
        # below says what is wrong with them.
        data: Any = item.model_dump(mode="json", warnings=False)
    else:
        data = dict(item)
    record = NormalizedJobRecord.model_validate(data)
    expected = record.expected_job_id()
    if record.job_id != expected:
        raise JobIdMismatch(record.job_id, expected)
    return record


def compute_job_id(content: dict[str, Any]) -> str:
    """Stable id: readable indexes plus a hash of the full content (``content_dict()``)."""
    digest = hashlib.sha256(
        json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=False).encode()
    ).hexdigest()
    return (
        f"{content['pack_id']}-{content['row_index']}-{content['combo_index']}"
        f"-{content['variant_index']}-{content['batch_index']}-{digest[:10]}"
    )
