"""Which Prefect server: one answer for every entry point (CLI, SDK, deploy, worker).

1. ``PREFECT_API_URL`` (environment or the active Prefect profile), if it answers. A URL that
   is the running embedded stack's is recognised as that stack, so nothing starts a second one.
2. Else the embedded stack running for this data dir (``stablenew up`` / ``run --keep``).
3. Else :class:`~stablenew.errors.PrefectUnavailable`, saying how to start one.

Prefect's throw-away temporary server is never used: jobs queued there sit in a database no
worker reads.
"""

from __future__ import annotations

import threading
from dataclasses import dataclass
from pathlib import Path
from urllib.parse import urlsplit

from stablenew.errors import PrefectUnavailable
from stablenew.orchestration.server.embedded import Stack, healthy

_LOOPBACK = {"127.0.0.1", "localhost", "::1", "[::1]"}


@dataclass(frozen=True)
class PrefectTarget:
    """A Prefect API to talk to, and the embedded stack it belongs to (if it does)."""

    api_url: str
    stack: Stack | None = None

    @property
    def ui_url(self) -> str:
        return self.api_url.rstrip("/").removesuffix("/api")

    @property
    def embedded(self) -> bool:
        return self.stack is not None


def explicit_api_url() -> str | None:
    """``PREFECT_API_URL`` as Prefect itself reads it (environment, then profile)."""
    from prefect.settings import PREFECT_API_URL

    return PREFECT_API_URL.value() or None


def same_api(a: str, b: str) -> bool:
    """Whether two API URLs name the same server (loopback spellings are one host)."""

    def key(url: str) -> tuple[str, str, int | None, str]:
        parts = urlsplit(url.strip())
        host = (parts.hostname or "").lower()
        host = "loopback" if host in _LOOPBACK else host
        default_port = 443 if parts.scheme == "https" else 80
        return parts.scheme, host, parts.port or default_port, parts.path.rstrip("/")

    return key(a) == key(b)


def _start_hint(home: Path) -> str:
    return (
        f"no PREFECT_API_URL is set and no embedded stack is running for {home}; "
        "start one with `stablenew up` (or `stablenew run PACK`), or set PREFECT_API_URL "
        "to your Prefect server"
    )


def locate_prefect(home: Path) -> PrefectTarget:
    """Resolve the Prefect API for data dir ``home`` (see the module docstring)."""
    stack = Stack.load(home)
    running = stack if stack is not None and stack.prefect_url else None
    explicit = explicit_api_url()
    if explicit:
        if running is not None and same_api(explicit, running.prefect_url or ""):
            return PrefectTarget(explicit, running)
        if healthy(f"{explicit.rstrip('/')}/health"):
            return PrefectTarget(explicit)
        hint = (
            f"the embedded stack of {home} is at {running.prefect_url}: "
            "`unset PREFECT_API_URL` to use it"
            if running is not None
            else "unset PREFECT_API_URL to use the embedded stack (`stablenew up`)"
        )
        raise PrefectUnavailable(explicit, f"PREFECT_API_URL does not answer; {hint}")
    if running is None or running.prefect_url is None:
        raise PrefectUnavailable("(none)", _start_hint(home))
    if not healthy(f"{running.prefect_url}/health"):
        raise PrefectUnavailable(
            running.prefect_url,
            f"the embedded stack of {home} does not answer; "
            "restart it with `stablenew down` then `stablenew up`",
        )
    return PrefectTarget(running.prefect_url, running)


_cache: dict[tuple[str | None, Path], PrefectTarget] = {}
_cache_lock = threading.Lock()


def cached_prefect(home: Path) -> PrefectTarget:
    """:func:`locate_prefect`, once per process for a given ``PREFECT_API_URL`` and data dir.

    Every client the SDK opens goes through here; a health check each time would put a round
    trip on every call. A server that dies later fails the call itself, with its own error.
    """
    key = (explicit_api_url(), home)
    with _cache_lock:
        found = _cache.get(key)
    if found is None:
        found = locate_prefect(home)
        with _cache_lock:
            _cache[key] = found
    return found


def forget_located() -> None:
    """Drop what :func:`cached_prefect` remembered (a stack was started or stopped)."""
    with _cache_lock:
        _cache.clear()
