"""Which Prefect every entry point uses (``locate``), against the real embedded stack: the
stack's own URL is recognised as the stack, a stale or absent one is a clear error, the SDK
finds the stack through the data dir alone, and the Prefect UI is told the right API."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew import JobService, PrefectUnavailable
from stablenew.orchestration.server.locate import forget_located, locate_prefect, same_api
from stablenew.settings import get_settings
from tests.orchestration.conftest import LiveStack


@pytest.fixture
def no_api_url(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.delenv("PREFECT_API_URL", raising=False)
    forget_located()
    with temporary_settings(restore_defaults={PREFECT_API_URL}):
        yield
    forget_located()


@pytest.mark.usefixtures("no_api_url")
def test_the_stacks_own_url_is_the_stack(live_stack: LiveStack) -> None:
    home = live_stack.stack.home
    found = locate_prefect(home)
    assert found.api_url == live_stack.prefect_url
    assert found.stack is not None
    localhost = live_stack.prefect_url.replace("127.0.0.1", "localhost") + "/"
    with temporary_settings(updates={PREFECT_API_URL: localhost}):
        again = locate_prefect(home)
    assert again.stack is not None
    assert again.stack.pids == found.stack.pids


@pytest.mark.usefixtures("no_api_url")
def test_a_stale_url_names_itself_and_the_running_stack(live_stack: LiveStack) -> None:
    with (
        temporary_settings(updates={PREFECT_API_URL: "http://127.0.0.1:9/api"}),
        pytest.raises(PrefectUnavailable) as raised,
    ):
        locate_prefect(live_stack.stack.home)
    assert "http://127.0.0.1:9/api" in str(raised.value)
    assert live_stack.prefect_url in str(raised.value)


@pytest.mark.usefixtures("no_api_url")
def test_no_url_and_no_stack_says_how_to_start_one(tmp_path: object) -> None:
    with pytest.raises(PrefectUnavailable, match="stablenew up"):
        locate_prefect(get_settings().home / "nothing-here")


@pytest.mark.usefixtures("no_api_url")
def test_the_sdk_finds_the_stack_through_the_data_dir(
    live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("STABLENEW_HOME", str(live_stack.stack.home))
    get_settings.cache_clear()
    assert JobService().queue_state().pool == "stablenew-gpu"


@pytest.mark.usefixtures("no_api_url")
@pytest.mark.parametrize(("users", "tries"), [(None, 120), ("7", 7)])
def test_a_client_of_the_embedded_stack_waits_out_a_locked_database_as_its_workers_do(
    live_stack: LiveStack, monkeypatch: pytest.MonkeyPatch, users: str | None, tries: int
) -> None:
    """The stack answers a locked database with a 0.25 s Retry-After; with Prefect's 5 tries
    a pause under a burst of writes failed with its 503. A user's own setting stays."""
    import asyncio

    from prefect.settings import PREFECT_CLIENT_MAX_RETRIES

    from stablenew.orchestration._prefect import prefect_client

    monkeypatch.setenv("STABLENEW_HOME", str(live_stack.stack.home))
    if users is None:
        monkeypatch.delenv("PREFECT_CLIENT_MAX_RETRIES", raising=False)
    else:
        monkeypatch.setenv("PREFECT_CLIENT_MAX_RETRIES", users)
    get_settings.cache_clear()

    async def seen() -> int:
        async with prefect_client() as client:
            await client.api_healthcheck()
            return PREFECT_CLIENT_MAX_RETRIES.value()

    assert asyncio.run(seen()) == tries


def test_the_prefect_ui_is_told_the_servers_real_api(live_stack: LiveStack) -> None:
    ui = live_stack.prefect_url.removesuffix("/api")
    settings = httpx.get(f"{ui}/ui-settings", timeout=10).json()
    assert settings["api_url"] == live_stack.prefect_url


@pytest.mark.parametrize(
    ("a", "b", "same"),
    [
        ("http://127.0.0.1:4200/api", "http://localhost:4200/api/", True),
        ("http://127.0.0.1:4200/api", "http://127.0.0.1:4201/api", False),
        ("https://prefect.example/api", "https://prefect.example:443/api", True),
        ("http://127.0.0.1:4200/api", "http://10.0.0.1:4200/api", False),
    ],
)
def test_same_api(a: str, b: str, same: bool) -> None:
    assert same_api(a, b) is same
