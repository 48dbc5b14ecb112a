"""Simulator configuration: timing model, fault injection, auth, inventory.

The same :class:`TimingConfig` and :class:`FaultConfig` fields are CLI flags of
``stablenew webui-sim`` and bodies of ``POST /stablenew-sim/v1/timing`` / ``/faults``.
"""

from __future__ import annotations

from pathlib import Path

from pydantic import BaseModel, ConfigDict, Field, field_validator


class TimingConfig(BaseModel):
    """How long simulated work takes. Generation of one image takes
    ``seconds_per_image + steps * seconds_per_step + megapixels * seconds_per_megapixel``;
    an upscale takes ``seconds_per_megapixel`` per output megapixel."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    seconds_per_step: float = Field(default=0.01, ge=0, description="Per sampling step, per image.")
    seconds_per_megapixel: float = Field(default=0.0, ge=0, description="Per output megapixel.")
    seconds_per_image: float = Field(default=0.0, ge=0, description="Fixed cost per image.")
    model_switch_seconds: float = Field(
        default=0.0, ge=0, description="Loading a checkpoint other than the loaded one."
    )
    startup_seconds: float = Field(
        default=0.0, ge=0, description="Delay before the server accepts connections."
    )


class FaultConfig(BaseModel):
    """Injected failures. Counting covers processing requests only (txt2img, img2img,
    extra-single-image, extra-batch-images), 1-based since start or the last reset."""

    model_config = ConfigDict(extra="forbid", validate_assignment=True)

    fail_nth: list[int] = Field(
        default_factory=list, description="Answer these processing requests with a 500."
    )
    fail_next: int = Field(default=0, ge=0, description="Answer the next N with a 500.")
    oom_rate: float = Field(default=0.0, ge=0, le=1, description="Chance of a CUDA OOM 500.")
    hang_seconds: float = Field(
        default=0.0, ge=0, description="Hold each processing request this long (under the lock)."
    )
    drop_rate: float = Field(
        default=0.0, ge=0, le=1, description="Chance of dropping the connection mid-response."
    )
    drop_next: int = Field(default=0, ge=0, description="Drop the next N responses mid-way.")
    reject_auth: bool = Field(default=False, description="Answer every protected route 401.")
    reject_next: int = Field(
        default=0,
        ge=0,
        description="Answer the next N with a FastAPI 422 on body.sampler_name (a request the "
        "WebUI refuses: never worth retrying).",
    )


class SimConfig(BaseModel):
    """Everything a simulator instance needs; ``SimServer(SimConfig(...))`` or the CLI."""

    model_config = ConfigDict(extra="forbid")

    host: str = Field(default="127.0.0.1", description="Bind address (loopback by default).")
    port: int = Field(default=7860, ge=0, le=65535, description="0 picks a free port.")
    api_auth: str | None = Field(
        default=None, description="'user:pass[,user2:pass2]' as A1111's --api-auth."
    )
    inventory_file: Path | None = Field(default=None, description="YAML/JSON inventory override.")
    timing: TimingConfig = Field(default_factory=TimingConfig)
    faults: FaultConfig = Field(default_factory=FaultConfig)
    seed: int | None = Field(
        default=None, description="Seeds the random source (seed=-1 draws, fault rates)."
    )

    @field_validator("api_auth")
    @classmethod
    def _check_auth(cls, value: str | None) -> str | None:
        if value is not None:
            parse_api_auth(value)
        return value

    def credentials(self) -> dict[str, str]:
        return parse_api_auth(self.api_auth) if self.api_auth else {}


def parse_api_auth(value: str) -> dict[str, str]:
    """``"u1:p1,u2:p2"`` → ``{"u1": "p1", "u2": "p2"}`` (split on ``,`` then the first ``:``)."""
    pairs: dict[str, str] = {}
    for item in value.split(","):
        user, sep, password = item.strip().partition(":")
        if not sep or not user:
            raise ValueError("api_auth must look like 'user:password[,user2:password2]'")
        pairs[user] = password
    return pairs
