"""Shared fixtures: a clean STABLENEW_* environment for every test, and a home of the
session's own, so nothing a test runs (Prefect's result storage and profiles, the default
data dir) writes into the real user's home."""

from __future__ import annotations

import os
import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

# Set before anything imports Prefect, which reads PREFECT_HOME at import.
_SESSION_HOME = Path(tempfile.mkdtemp(prefix="stablenew-test-home-"))
for _name, _sub in (
    ("HOME", ""),
    ("XDG_DATA_HOME", ".local/share"),
    ("XDG_CONFIG_HOME", ".config"),
    ("XDG_CACHE_HOME", ".cache"),
    ("PREFECT_HOME", ".prefect"),
):
    os.environ[_name] = str(_SESSION_HOME / _sub)
for _name in ("PREFECT_API_URL", "PREFECT_PROFILE"):
    os.environ.pop(_name, None)

from stablenew.settings import get_settings  # noqa: E402


def pytest_unconfigure(config: pytest.Config) -> None:
    shutil.rmtree(_SESSION_HOME, ignore_errors=True)


@pytest.fixture(autouse=True)
def _clean_stablenew_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("STABLENEW_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
