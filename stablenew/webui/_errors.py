"""The one translation from HTTP failures to :class:`stablenew.errors.WebUIError` subclasses.

Every failure the client sees goes through :func:`error_for_exception` (transport problems,
called from the client's single ``except`` clause) or :func:`error_for_response` (non-2xx
answers). Bodies of A1111, Forge and SD.Next are all understood (reference §6, §11):

* A1111 ``{"error", "detail", "body", "errors"}``; Forge ``{"error", "detail", "body", "message"}``
  or plain ``{"detail"}``; SD.Next ``{"error", "code", "detail", "body", "errors"}``;
* FastAPI 422 ``{"detail": [{"loc": [...], "msg": ..., "type": ...}]}`` (pydantic v1 or v2).
"""

from __future__ import annotations

import json
from typing import Any

import requests
from urllib3.exceptions import ConnectTimeoutError

from stablenew.errors import (
    WebUIAuthError,
    WebUIError,
    WebUIOutOfMemory,
    WebUIRequestRejected,
    WebUIServerError,
    WebUITimeout,
    WebUIUnreachable,
)

_OOM_MARKERS = ("outofmemoryerror", "out of memory")


def error_for_exception(exc: requests.RequestException, url: str) -> WebUIError:
    """A transport failure: never answered, answered too late, or the connection broke."""
    kind = type(exc).__name__
    if isinstance(exc, requests.ConnectTimeout):
        return WebUIUnreachable(f"WebUI did not accept the connection in time ({kind})", url=url)
    if isinstance(exc, requests.Timeout):
        return WebUITimeout("WebUI did not answer within the read timeout", url=url)
    if isinstance(exc, requests.ConnectionError | requests.exceptions.ChunkedEncodingError):
        return WebUIUnreachable(f"WebUI connection failed or was dropped ({kind})", url=url)
    return WebUIUnreachable(f"WebUI request failed ({kind})", url=url)


def never_reached(err: BaseException) -> bool:
    """Whether ``err`` (raised by the client) is a connection that was never made: refused or
    not accepted in time, so the WebUI cannot have received the request. A connection dropped
    after the request went out is not one: the WebUI may have started working on it."""
    cause = err.__cause__
    if isinstance(cause, requests.ConnectTimeout):
        return True
    if not isinstance(cause, requests.ConnectionError) or not cause.args:
        return False
    # requests wraps urllib3's MaxRetryError, whose ``reason`` says what happened.
    reason = getattr(cause.args[0], "reason", None)
    return isinstance(reason, ConnectTimeoutError)  # NewConnectionError is one of these


def error_for_response(status: int, text: str, url: str) -> WebUIError:
    """A non-2xx answer, classified by status and by what the body says."""
    body = _parse(text)
    message = _message(body, text)
    if status in (401, 403):
        return WebUIAuthError(f"WebUI refused the credentials: {message}", url=url, status=status)
    if status >= 500:
        if any(m in f"{_error_class(body)} {message}".lower() for m in _OOM_MARKERS):
            return WebUIOutOfMemory(
                f"WebUI ran out of GPU memory: {message}", url=url, status=status, body=text
            )
        return WebUIServerError(f"WebUI failed: {message}", url=url, status=status, body=text)
    if status in (408, 429):
        return WebUIServerError(
            f"WebUI is busy: {message}", url=url, status=status, body=text, retryable=True
        )
    field = _field_path(body)
    where = f" (field {field})" if field else ""
    return WebUIRequestRejected(
        f"WebUI rejected the request{where}: {message}",
        field=field,
        url=url,
        status=status,
        body=text,
    )


def _parse(text: str) -> Any:
    try:
        return json.loads(text) if text else None
    except ValueError:
        return None


def _error_class(body: Any) -> str:
    return str(body.get("error") or "") if isinstance(body, dict) else ""


def _message(body: Any, text: str) -> str:
    """The most specific text the server gave: errors/message, then detail, then error."""
    if isinstance(body, dict):
        for key in ("errors", "message"):
            if body.get(key):
                return str(body[key])[:300]
        detail = body.get("detail")
        if isinstance(detail, list) and detail and isinstance(detail[0], dict):
            return str(detail[0].get("msg", detail[0]))[:300]
        if detail:
            return str(detail)[:300]
        if body.get("error"):
            return str(body["error"])[:300]
    return text.strip()[:300] or "no details"


def _field_path(body: Any) -> str | None:
    """``body.steps`` from FastAPI's ``detail[0].loc`` (pydantic v1 and v2 alike)."""
    if not isinstance(body, dict):
        return None
    detail = body.get("detail")
    if not (isinstance(detail, list) and detail and isinstance(detail[0], dict)):
        return None
    loc = detail[0].get("loc")
    if not isinstance(loc, list | tuple) or not loc:
        return None
    return ".".join(str(part) for part in loc)
