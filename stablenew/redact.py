"""Credentials out of URLs, wherever a URL is shown, stored or published.

A WebUI may be given as ``http://user:password@host:port`` (the client supports it for
``--api-auth``). That form is for connecting only: anything a person or another program can
read (a log line, the stack's state file, CLI output, an artifact, a Prefect Variable and so
its events) gets the URL through :func:`redact_url`, or text that may quote one through
:func:`redact_text`. Both drop the whole userinfo (user and password): the host, port, path
and query stay, so the message still says which WebUI it means.
"""

from __future__ import annotations

import re
from urllib.parse import unquote, urlsplit

# scheme://userinfo@ — the userinfo runs to the last "@" before the authority ends ("/", "?",
# "#" or whitespace), as urllib.parse splits it, so a password holding "@" goes whole.
_USERINFO = re.compile(r"(?P<scheme>\b[a-zA-Z][a-zA-Z0-9+.-]*://)[^/?#\s]*@")


def redact_url(url: str) -> str:
    """``url`` without its ``user:password@``; unchanged when it has none."""
    return _USERINFO.sub(r"\g<scheme>", url, count=1)


def redact_text(text: str) -> str:
    """``text`` with the userinfo of every URL in it removed."""
    return _USERINFO.sub(r"\g<scheme>", text)


def split_credentials(url: str) -> tuple[str, tuple[str, str] | None]:
    """``url`` without its userinfo, and the ``(user, password)`` it held (``None``: none)."""
    parts = urlsplit(url)
    if parts.username is None:
        return url, None
    return redact_url(url), (unquote(parts.username), unquote(parts.password or ""))
