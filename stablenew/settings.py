"""Settings: environment (``STABLENEW_*``, nested with ``__``) over an optional YAML file.

Precedence, highest first: init arguments > environment > settings file > defaults. The file is
``STABLENEW_SETTINGS_FILE`` if set, else ``settings.yaml`` in the user's config dir (e.g.
``~/.config/stablenew/settings.yaml``) when it exists. Nothing depends on the working directory:
the data dir is the user's (``~/.local/share/stablenew`` on Linux) unless ``STABLENEW_HOME``
says otherwise. Nothing is read at import time; call :func:`get_settings`.
"""

from __future__ import annotations

import functools
import os
from pathlib import Path
from typing import Any

import platformdirs
import yaml
from pydantic import BaseModel, Field, SecretStr, ValidationError, field_validator
from pydantic_settings import (
    BaseSettings,
    PydanticBaseSettingsSource,
    SettingsConfigDict,
)

from stablenew.errors import ConfigError

APP_NAME = "stablenew"


def default_home() -> Path:
    """The platform's per-user data dir for StableNew."""
    return Path(platformdirs.user_data_dir(APP_NAME, appauthor=False))


def default_settings_file() -> Path:
    return Path(platformdirs.user_config_dir(APP_NAME, appauthor=False)) / "settings.yaml"


class WebUISettings(BaseModel):
    """How a worker reaches its one WebUI (one GPU)."""

    url: str | None = Field(
        default=None,
        description="Base URL of the AUTOMATIC1111-compatible WebUI, e.g. http://127.0.0.1:7860. "
        "Unset means the embedded default starts the bundled simulator.",
    )
    username: str | None = Field(default=None, description="HTTP basic-auth user (--api-auth).")
    password: SecretStr | None = Field(default=None, description="HTTP basic-auth password.")
    secret_block: str | None = Field(
        default=None,
        description="Name of a Prefect Secret block holding 'user:password'; used when "
        "username/password are not set.",
    )
    connect_timeout: float = Field(default=5.0, gt=0, description="Seconds to open a connection.")
    read_timeout: float = Field(
        default=600.0, gt=0, description="Seconds to wait for a generation answer."
    )
    ready_timeout: float = Field(
        default=60.0, ge=0, description="Seconds a worker waits for the WebUI to become ready."
    )
    outage_timeout: float = Field(
        default=600.0,
        ge=0,
        description="Seconds a claimed job waits for its WebUI to come back (a restart, a "
        "network blip) before it fails; waiting does not use up the job's retries.",
    )


class WorkerSettings(BaseModel):
    """How workers notice each other's death and how one stops."""

    heartbeat_seconds: float = Field(
        default=10.0, gt=0, description="How often a worker tells Prefect it is alive."
    )
    dead_after: float = Field(
        default=30.0,
        gt=0,
        description="Seconds without a heartbeat after which a worker counts as dead and the "
        "runs it claimed are recovered by the others.",
    )
    retries_on_crash: int = Field(
        default=1,
        ge=0,
        description="Times a job whose worker died while it was generating is run again "
        "automatically (a new run of the same job).",
    )
    stop_grace: float = Field(
        default=60.0,
        ge=0,
        description="Seconds a stopping worker (SIGTERM, Ctrl-C) lets the generating job "
        "finish before interrupting it and putting it back in its queue.",
    )


class LimitsSettings(BaseModel):
    """Ceilings of this installation; a pack's own ``limits`` may only lower them."""

    max_jobs: int = Field(default=10_000, ge=1, description="Most jobs one pack may expand to.")
    wildcard_roots: list[Path] = Field(
        default_factory=list,
        description="Extra folders a pack's `wildcards:` may name, besides the pack's own folder.",
    )


class Settings(BaseSettings):
    """All StableNew settings. Env names: ``STABLENEW_HOME``, ``STABLENEW_WEBUI__URL``, ..."""

    model_config = SettingsConfigDict(
        env_prefix="STABLENEW_",
        env_nested_delimiter="__",
        extra="forbid",
    )

    home: Path = Field(
        default_factory=default_home,
        description="Data directory: embedded Prefect database, history, logs, outputs. "
        "Defaults to the platform's user data dir (~/.local/share/stablenew on Linux).",
    )
    output_root: Path | None = Field(
        default=None, description="Where images are written; defaults to <home>/outputs."
    )
    history_url: str | None = Field(
        default=None,
        description="History store location (sqlite:///path); defaults to <home>/history.db.",
    )
    work_pool: str = Field(default="stablenew-gpu", description="Prefect work pool for jobs.")
    webui: WebUISettings = Field(default_factory=WebUISettings)
    worker: WorkerSettings = Field(default_factory=WorkerSettings)
    limits: LimitsSettings = Field(default_factory=LimitsSettings)
    generation: dict[str, Any] = Field(
        default_factory=dict,
        description="Generation defaults applied under every pack's `defaults` "
        "(same keys as a pack's `defaults`).",
    )

    @field_validator("home", "output_root")
    @classmethod
    def _absolute(cls, value: Path | None) -> Path | None:
        # Relative paths are anchored once, here: a path that followed the working directory
        # would split one user's data over every folder they happen to run from.
        return None if value is None else value.expanduser().resolve()

    @property
    def resolved_output_root(self) -> Path:
        return self.output_root if self.output_root is not None else self.home / "outputs"

    @property
    def resolved_history_url(self) -> str:
        return self.history_url or f"sqlite:///{self.home / 'history.db'}"

    @classmethod
    def settings_customise_sources(
        cls,
        settings_cls: type[BaseSettings],
        init_settings: PydanticBaseSettingsSource,
        env_settings: PydanticBaseSettingsSource,
        dotenv_settings: PydanticBaseSettingsSource,
        file_secret_settings: PydanticBaseSettingsSource,
    ) -> tuple[PydanticBaseSettingsSource, ...]:
        return (init_settings, env_settings, _YamlFileSource(settings_cls))


class _YamlFileSource(PydanticBaseSettingsSource):
    """Reads the settings file with ``yaml.safe_load``; errors name the file."""

    def __init__(self, settings_cls: type[BaseSettings]) -> None:
        super().__init__(settings_cls)
        explicit = os.environ.get("STABLENEW_SETTINGS_FILE")
        self.path = Path(explicit) if explicit else default_settings_file()
        self.required = explicit is not None

    def get_field_value(self, field: Any, field_name: str) -> tuple[Any, str, bool]:
        # Unused: __call__ returns the whole mapping at once.
        return None, field_name, False

    def __call__(self) -> dict[str, Any]:
        if not self.path.is_file():
            if self.required:
                raise ConfigError("settings file not found", source=str(self.path))
            return {}
        try:
            data = yaml.safe_load(self.path.read_text(encoding="utf-8"))
        except yaml.YAMLError as e:
            raise ConfigError(f"not valid YAML: {e}", source=str(self.path)) from e
        if data is None:
            return {}
        if not isinstance(data, dict):
            raise ConfigError("expected a mapping at the top level", source=str(self.path))
        return data


def load_settings(**overrides: Any) -> Settings:
    """Build settings afresh; invalid values raise :class:`ConfigError` naming the source."""
    try:
        return Settings(**overrides)
    except ValidationError as e:
        source = os.environ.get("STABLENEW_SETTINGS_FILE") or "environment/settings file"
        problems = "; ".join(
            f"{'.'.join(str(p) for p in err['loc'])}: {err['msg']}" for err in e.errors()
        )
        raise ConfigError(problems, source=source) from e


@functools.cache
def get_settings() -> Settings:
    """The process-wide settings; tests call ``get_settings.cache_clear()`` to reload."""
    return load_settings()
