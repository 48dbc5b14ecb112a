"""Request bodies of the simulated endpoints, shaped like A1111's generated pydantic models.

Every field is optional (``null`` passes and means the default), unknown keys are ignored,
and the defaults are A1111 1.10's (reference §3, §5). :func:`v1_validation_errors` gives 422
bodies the pydantic-v1 shape A1111 answers with (``loc``/``msg``/``type``).
"""

from __future__ import annotations

from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Body(BaseModel):
    model_config = ConfigDict(extra="ignore")

    def value(self, name: str) -> Any:
        """The field, with ``null`` read as the declared default."""
        v = getattr(self, name)
        return (
            type(self).model_fields[name].get_default(call_default_factory=True) if v is None else v
        )


class _Processing(_Body):
    prompt: str | None = ""
    negative_prompt: str | None = ""
    styles: list[str] | None = None
    seed: int | None = -1
    subseed: int | None = -1
    subseed_strength: float | None = 0
    seed_resize_from_h: int | None = -1
    seed_resize_from_w: int | None = -1
    sampler_name: str | None = None
    scheduler: str | None = None
    batch_size: int | None = 1
    n_iter: int | None = 1
    steps: int | None = 50
    cfg_scale: float | None = 7.0
    width: int | None = 512
    height: int | None = 512
    restore_faces: bool | None = None
    tiling: bool | None = None
    do_not_save_samples: bool | None = False
    do_not_save_grid: bool | None = False
    eta: float | None = None
    denoising_strength: float | None = None
    s_min_uncond: float | None = None
    s_churn: float | None = None
    s_tmax: float | None = None
    s_tmin: float | None = None
    s_noise: float | None = None
    override_settings: dict[str, Any] | None = None
    override_settings_restore_afterwards: bool | None = True
    refiner_checkpoint: str | None = None
    refiner_switch_at: float | None = None
    disable_extra_networks: bool | None = False
    firstpass_image: str | None = None
    comments: dict[str, Any] | None = None
    sampler_index: str | None = "Euler"
    script_name: str | None = None
    script_args: list[Any] | None = Field(default_factory=list)
    send_images: bool | None = True
    save_images: bool | None = False
    alwayson_scripts: dict[str, Any] | None = Field(default_factory=dict)
    force_task_id: str | None = None
    infotext: str | None = None


class Txt2ImgRequest(_Processing):
    enable_hr: bool | None = False
    firstphase_width: int | None = 0
    firstphase_height: int | None = 0
    hr_scale: float | None = 2.0
    hr_upscaler: str | None = None
    hr_second_pass_steps: int | None = 0
    hr_resize_x: int | None = 0
    hr_resize_y: int | None = 0
    hr_checkpoint_name: str | None = None
    hr_sampler_name: str | None = None
    hr_scheduler: str | None = None
    hr_prompt: str | None = ""
    hr_negative_prompt: str | None = ""


class Img2ImgRequest(_Processing):
    init_images: list[str] | None = None
    resize_mode: int | None = 0
    image_cfg_scale: float | None = None
    mask: str | None = None
    mask_blur_x: int | None = 4
    mask_blur_y: int | None = 4
    mask_blur: int | None = None
    mask_round: bool | None = True
    inpainting_fill: int | None = 0
    inpaint_full_res: bool | None = True
    inpaint_full_res_padding: int | None = 0
    inpainting_mask_invert: int | None = 0
    initial_noise_multiplier: float | None = None
    latent_mask: str | None = None
    include_init_images: bool | None = False
    denoising_strength: float | None = 0.75


class ExtrasRequest(_Body):
    resize_mode: Literal[0, 1] | None = 0
    show_extras_results: bool | None = True
    gfpgan_visibility: float | None = Field(default=0, ge=0, le=1)
    codeformer_visibility: float | None = Field(default=0, ge=0, le=1)
    codeformer_weight: float | None = Field(default=0, ge=0, le=1)
    upscaling_resize: float | None = Field(default=2, gt=0)
    upscaling_resize_w: int | None = Field(default=512, ge=1)
    upscaling_resize_h: int | None = Field(default=512, ge=1)
    upscaling_crop: bool | None = True
    upscaler_1: str | None = "None"
    upscaler_2: str | None = "None"
    extras_upscaler_2_visibility: float | None = Field(default=0, ge=0, le=1)
    upscale_first: bool | None = False


class ExtrasSingleRequest(ExtrasRequest):
    image: str | None = ""


class FileData(_Body):
    data: str
    name: str


class ExtrasBatchRequest(ExtrasRequest):
    imageList: list[FileData] = Field(default_factory=list)


class PNGInfoRequest(_Body):
    image: str


_V1_TYPES = {
    "int_parsing": ("type_error.integer", "value is not a valid integer"),
    "int_from_float": ("type_error.integer", "value is not a valid integer"),
    "int_type": ("type_error.integer", "value is not a valid integer"),
    "float_parsing": ("type_error.float", "value is not a valid float"),
    "float_type": ("type_error.float", "value is not a valid float"),
    "bool_parsing": ("type_error.bool", "value could not be parsed to a boolean"),
    "bool_type": ("type_error.bool", "value could not be parsed to a boolean"),
    "string_type": ("type_error.str", "str type expected"),
    "list_type": ("type_error.list", "value is not a valid list"),
    "dict_type": ("type_error.dict", "value is not a valid dict"),
    "missing": ("value_error.missing", "field required"),
    "literal_error": ("value_error.const", "unexpected value"),
    "greater_than": ("value_error.number.not_gt", "ensure this value is greater than {gt}"),
    "greater_than_equal": ("value_error.number.not_ge", "ensure this value is >= {ge}"),
    "less_than_equal": ("value_error.number.not_le", "ensure this value is <= {le}"),
    "json_invalid": ("value_error.jsondecode", "Expecting value"),
}


def v1_validation_errors(errors: list[Any]) -> list[dict[str, Any]]:
    """Pydantic-v2 error dicts as A1111 (FastAPI 0.94, pydantic v1) would word them."""
    out: list[dict[str, Any]] = []
    for err in errors:
        kind, msg = _V1_TYPES.get(str(err.get("type")), (str(err.get("type")), err.get("msg")))
        ctx = err.get("ctx") or {}
        try:
            msg = str(msg).format(**ctx)
        except (KeyError, IndexError, ValueError):
            msg = str(msg)
        out.append({"loc": list(err.get("loc", ())), "msg": msg, "type": kind})
    return out
