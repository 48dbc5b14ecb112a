"""A1111's HTTP conventions: the ``api_middleware`` error wrapper, ``X-Process-Time``,
``--api-auth`` basic auth (401 wrapped, no ``WWW-Authenticate``), and pydantic-v1 422 bodies."""

from __future__ import annotations

import base64
import binascii
import json
import logging
import secrets
import time
from typing import Any

from fastapi import FastAPI, HTTPException, Request
from fastapi.exceptions import RequestValidationError
from fastapi.responses import JSONResponse
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from stablenew.webui.simulator.schemas import v1_validation_errors
from stablenew.webui.simulator.state import SimState

logger = logging.getLogger(__name__)


class DroppedConnection(Exception):
    """Raised mid-body to make the server abort the connection (fault injection)."""


def wrapped(error: str, *, detail: Any = "", errors: str = "", status: int = 500) -> JSONResponse:
    """The ``{error, detail, body, errors}`` body of A1111's ``api_middleware``."""
    return JSONResponse(
        status_code=status,
        content={"error": error, "detail": detail or "", "body": "", "errors": errors},
    )


class A1111Middleware:
    """Catch-all like A1111's: uncaught exceptions become the wrapped 500 body; every response
    gets ``X-Process-Time``. Once a response has started, errors abort the connection."""

    def __init__(self, app: ASGIApp) -> None:
        self.app = app

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        started = time.perf_counter()
        response_started = False

        async def send_wrapper(message: Message) -> None:
            nonlocal response_started
            if message["type"] == "http.response.start":
                response_started = True
                headers = list(message.get("headers", []))
                elapsed = f"{time.perf_counter() - started:.4f}".encode()
                headers.append((b"x-process-time", elapsed))
                message = {**message, "headers": headers}
            await send(message)

        try:
            await self.app(scope, receive, send_wrapper)
        except Exception as e:
            if response_started:
                raise
            if not isinstance(e, AssertionError | RuntimeError):
                logger.exception("simulator: unexpected error")
            response = wrapped(type(e).__name__, errors=str(e))
            await response(scope, receive, send_wrapper)


def install_error_handlers(app: FastAPI) -> None:
    @app.exception_handler(HTTPException)
    async def _http_exception(request: Request, exc: HTTPException) -> JSONResponse:
        # Starlette 0.26's HTTPException has no __str__, so A1111 sends errors: "".
        return wrapped("HTTPException", detail=exc.detail, status=exc.status_code)

    @app.exception_handler(RequestValidationError)
    async def _validation(request: Request, exc: RequestValidationError) -> JSONResponse:
        return JSONResponse(
            status_code=422, content={"detail": v1_validation_errors(list(exc.errors()))}
        )


def check_auth(state: SimState, authorization: str | None) -> None:
    """``--api-auth``: the messages of FastAPI's ``HTTPBasic`` and A1111's ``auth()``."""
    with state.mutex:
        reject = state.faults.reject_auth
    credentials = state.config.credentials()
    if not credentials and not reject:
        return
    scheme, _, param = (authorization or "").partition(" ")
    if scheme.lower() != "basic" or not param:
        raise HTTPException(status_code=401, detail="Not authenticated")
    try:
        user, sep, password = base64.b64decode(param, validate=True).decode().partition(":")
    except (binascii.Error, ValueError, UnicodeDecodeError) as e:
        raise HTTPException(status_code=401, detail="Invalid authentication credentials") from e
    expected = credentials.get(user)
    if (
        reject
        or not sep
        or expected is None
        or not secrets.compare_digest(password.encode(), expected.encode())
    ):
        raise HTTPException(status_code=401, detail="Incorrect username or password")


def dropping_body(content: dict[str, Any]) -> Any:
    """A streamed body that stops half-way and aborts the connection."""
    data = json.dumps(content).encode()

    async def chunks() -> Any:
        yield data[: len(data) // 2]
        raise DroppedConnection("simulated connection drop")

    return chunks()
