"""Shared fixtures: a clean STABLENEW_* environment for every test."""

from __future__ import annotations

import os
from collections.abc import Iterator

import pytest

from stablenew.settings import get_settings


@pytest.fixture(autouse=True)
def _clean_stablenew_env(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    for name in list(os.environ):
        if name.startswith("STABLENEW_"):
            monkeypatch.delenv(name)
    get_settings.cache_clear()
    yield
    get_settings.cache_clear()
