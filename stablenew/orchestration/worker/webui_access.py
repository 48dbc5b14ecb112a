"""One warm WebUI client per process; credentials from env or a Prefect Secret block."""

from __future__ import annotations

import threading
import time

from stablenew.errors import ConfigError
from stablenew.records import NormalizedJobRecord
from stablenew.settings import Settings, get_settings
from stablenew.webui import WebUIClient
from stablenew.webui.preflight import WebUIInventory, check_record, fetch_inventory

INVENTORY_TTL = 300.0

_lock = threading.Lock()
_clients: dict[str, WebUIClient] = {}
_inventories: dict[str, tuple[float, WebUIInventory]] = {}


def _credentials(settings: Settings) -> tuple[str, str] | None:
    webui = settings.webui
    if webui.username and webui.password is not None:
        return webui.username, webui.password.get_secret_value()
    if webui.secret_block:
        from prefect.blocks.system import Secret

        value = str(Secret.load(webui.secret_block).get())  # type: ignore[union-attr]
        user, sep, password = value.partition(":")
        if not sep:
            # Never echo the value: it is the secret.
            raise ConfigError(
                "Secret block must hold 'user:password'", source=f"block {webui.secret_block}"
            )
        return user, password
    return None


def webui_client(settings: Settings | None = None) -> WebUIClient:
    """The process-wide client for the configured WebUI (kept warm across jobs)."""
    settings = settings or get_settings()
    url = settings.webui.url
    if not url:
        raise ConfigError("no WebUI configured", source="STABLENEW_WEBUI__URL")
    with _lock:
        client = _clients.get(url)
        if client is None:
            client = WebUIClient(
                url,
                auth=_credentials(settings),
                connect_timeout=settings.webui.connect_timeout,
                read_timeout=settings.webui.read_timeout,
            )
            _clients[url] = client
        return client


def inventory_at(url: str, settings: Settings | None = None) -> WebUIInventory:
    """The lists of the WebUI at ``url``, with the configured credentials (for checking a
    pack's names before it is queued)."""
    return fetch_inventory(url, auth=_credentials(settings or get_settings()))


def _inventory(client: WebUIClient, *, refresh: bool) -> WebUIInventory:
    with _lock:
        cached = _inventories.get(client.base_url)
    if cached is not None and not refresh and time.monotonic() - cached[0] < INVENTORY_TTL:
        return cached[1]
    inventory = WebUIInventory.fetch(client)
    with _lock:
        _inventories[client.base_url] = (time.monotonic(), inventory)
    return inventory


def preflight(record: NormalizedJobRecord, settings: Settings | None = None) -> None:
    """Fail fast if the record names a model, sampler, ... the worker's WebUI does not have.

    The lists are cached per worker; a miss re-reads them once, so a checkpoint added to
    the WebUI a moment ago is still found.
    """
    client = webui_client(settings)
    if _inventory(client, refresh=False).problems(record):
        check_record(client, record, _inventory(client, refresh=True))
