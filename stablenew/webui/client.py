"""``WebUIClient``: the worker's side of the AUTOMATIC1111 HTTP API (also Forge and SD.Next).

One :class:`requests.Session` per WebUI with a connection pool, explicit ``(connect, read)``
timeouts on every call (generation may take minutes, so the read timeout is per call), and
HTTP basic auth that never reaches a log line, an exception message or ``repr``. Every
transport failure is translated in :meth:`WebUIClient._request`, the only place that calls
``requests``; every non-2xx answer by :func:`._errors.error_for_response`.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from types import TracebackType
from typing import Any, Self

import requests
from requests.adapters import HTTPAdapter
from requests.auth import HTTPBasicAuth

from stablenew.errors import (
    ConfigError,
    WebUIError,
    WebUIRequestRejected,
    WebUIServerError,
    WebUITimeout,
    WebUIUnreachable,
)
from stablenew.redact import split_credentials
from stablenew.settings import WebUISettings
from stablenew.webui import _interrupts
from stablenew.webui._errors import error_for_exception, error_for_response
from stablenew.webui._images import decode_b64, to_data_uri
from stablenew.webui.models import (
    GenerationResult,
    InterruptedGeneration,
    ProgressSnapshot,
    UpscaleResult,
)

logger = logging.getLogger(__name__)

API = "/sdapi/v1"
# Calls that never wait for the generation lock (progress, interrupt, readiness) use this
# read timeout unless the caller says otherwise: a long generation timeout would hide a hang.
QUICK_READ_TIMEOUT = 30.0
# After a generation call timed out: how long the WebUI may take to stop what it was doing
# once interrupted (A1111 stops at the next sampling step, then decodes what it has).
SETTLE_TIMEOUT = 30.0


class WebUIClient:
    """Client of one WebUI. Thread-safe for concurrent calls; reuse one per WebUI.

    ``auth`` is ``(user, password)`` for ``--api-auth``; credentials embedded in ``base_url``
    (``http://u:p@host``) are taken out of the URL and used the same way.

    A generation or extras call that runs past the read timeout is not left running: the
    client interrupts the WebUI and waits (at most ``settle_timeout`` s) until ``/progress``
    says it is idle before raising :class:`WebUITimeout`, so the WebUI neither generates for
    nobody nor makes the caller's retry queue behind the hung job (see :meth:`stop_generation`).
    """

    def __init__(
        self,
        base_url: str,
        *,
        auth: tuple[str, str] | None = None,
        connect_timeout: float = 5.0,
        read_timeout: float = 600.0,
        session: requests.Session | None = None,
        pool_maxsize: int = 8,
        settle_timeout: float = SETTLE_TIMEOUT,
    ) -> None:
        url, url_auth = split_credentials(base_url)
        self.base_url = url.rstrip("/")
        self.connect_timeout = connect_timeout
        self.read_timeout = read_timeout
        self.settle_timeout = settle_timeout
        credentials = auth or url_auth
        self._auth = HTTPBasicAuth(*credentials) if credentials else None
        self._owns_session = session is None
        if session is None:
            session = requests.Session()
            adapter = HTTPAdapter(pool_connections=1, pool_maxsize=pool_maxsize, max_retries=0)
            session.mount("http://", adapter)
            session.mount("https://", adapter)
        self._session = session

    @classmethod
    def from_settings(
        cls, settings: WebUISettings, *, password_override: str | None = None
    ) -> WebUIClient:
        """Build from ``settings.webui``; ``password_override`` wins (e.g. from a Secret block)."""
        if not settings.url:
            raise ConfigError("no WebUI URL configured", source="STABLENEW_WEBUI__URL")
        auth = None
        if settings.username:
            password = password_override
            if password is None and settings.password is not None:
                password = settings.password.get_secret_value()
            auth = (settings.username, password or "")
        return cls(
            settings.url,
            auth=auth,
            connect_timeout=settings.connect_timeout,
            read_timeout=settings.read_timeout,
        )

    def __repr__(self) -> str:
        auth = f", auth=({self._auth.username!r}, '***')" if self._auth else ""
        return f"WebUIClient({self.base_url!r}{auth})"

    # -- lifecycle ---------------------------------------------------------------------------

    def close(self) -> None:
        """Close pooled connections (only of a session this client created)."""
        if self._owns_session:
            self._session.close()

    def __enter__(self) -> Self:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()

    # -- generation --------------------------------------------------------------------------

    def txt2img(
        self, payload: Mapping[str, Any], *, read_timeout: float | None = None
    ) -> GenerationResult:
        """``POST /txt2img``; an interrupted job raises :class:`InterruptedGeneration`."""
        return self._generate("/txt2img", payload, read_timeout)

    def img2img(
        self, payload: Mapping[str, Any], *, read_timeout: float | None = None
    ) -> GenerationResult:
        """``POST /img2img``; ``init_images`` may be raw base64 or data URIs."""
        return self._generate("/img2img", payload, read_timeout)

    def extra_single_image(
        self, payload: Mapping[str, Any], *, read_timeout: float | None = None
    ) -> UpscaleResult:
        """``POST /extra-single-image`` (upscale one image)."""
        data = self._processing("/extra-single-image", payload, read_timeout)
        return UpscaleResult(
            image=self._image(data.get("image"), "/extra-single-image"),
            html_info=str(data.get("html_info") or ""),
        )

    def png_info(self, image: bytes | str) -> dict[str, Any]:
        """``POST /png-info``: ``{info, items, parameters}`` of a PNG (bytes or base64)."""
        encoded = to_data_uri(image) if isinstance(image, bytes) else image
        return self._json_object("POST", "/png-info", {"image": encoded}, None)

    # -- control -----------------------------------------------------------------------------

    def progress(
        self, *, skip_current_image: bool = True, read_timeout: float | None = None
    ) -> ProgressSnapshot:
        """``GET /progress`` (lock-free on the server, so it answers while a job runs)."""
        data = self._json_object(
            "GET",
            "/progress",
            None,
            read_timeout or min(self.read_timeout, QUICK_READ_TIMEOUT),
            params={"skip_current_image": str(skip_current_image).lower()},
        )
        return ProgressSnapshot.from_json(data)

    def interrupt(self) -> None:
        """``POST /interrupt``: the running job stops at its next step and answers 200."""
        self._request("POST", f"{API}/interrupt", read_timeout=self._quick())

    def skip(self) -> None:
        """``POST /skip``: abandons the current batch only."""
        self._request("POST", f"{API}/skip", read_timeout=self._quick())

    def stop_generation(self, timeout: float | None = None) -> bool:
        """Interrupt whatever the WebUI is generating and wait until ``/progress`` says it is
        idle (at most ``timeout`` s, default ``settle_timeout``); whether it is. See
        :func:`._interrupts.stop_generation`."""
        return _interrupts.stop_generation(
            self, self.settle_timeout if timeout is None else timeout
        )

    def get_options(self) -> dict[str, Any]:
        return self._json_object("GET", "/options", None, None)

    def set_options(self, options: Mapping[str, Any], *, read_timeout: float | None = None) -> None:
        """``POST /options``; a checkpoint change loads the model under the generation lock."""
        self._request("POST", f"{API}/options", json=dict(options), read_timeout=read_timeout)

    def refresh_checkpoints(self) -> None:
        self._request("POST", f"{API}/refresh-checkpoints")

    # -- inventory ---------------------------------------------------------------------------

    def sd_models(self) -> list[dict[str, Any]]:
        return self._json_list("/sd-models")

    def samplers(self) -> list[dict[str, Any]]:
        return self._json_list("/samplers")

    def schedulers(self) -> list[dict[str, Any]]:
        return self._json_list("/schedulers")

    def upscalers(self) -> list[dict[str, Any]]:
        return self._json_list("/upscalers")

    def loras(self) -> list[dict[str, Any]]:
        return self._json_list("/loras")

    def embeddings(self) -> dict[str, Any]:
        """``{loaded: {name: ...}, skipped: {name: ...}}``; skipped ones do not fit the model
        loaded now (an SD 1.5 embedding while SDXL is loaded), but exist."""
        return self._json_object("GET", "/embeddings", None, None)

    def script_info(self) -> list[dict[str, Any]]:
        """``GET /script-info``: every script per tab, with ``is_alwayson`` / ``is_img2img``."""
        return self._json_list("/script-info")

    def latent_upscale_modes(self) -> list[dict[str, Any]]:
        return self._json_list("/latent-upscale-modes")

    def sd_vae(self) -> list[dict[str, Any]]:
        """VAEs; Forge has no ``/sd-vae`` and lists them (with text encoders) at ``/sd-modules``."""
        try:
            return self._json_list("/sd-vae")
        except WebUIRequestRejected as e:
            if e.status != 404:
                raise
            return self._json_list("/sd-modules")

    # -- readiness ---------------------------------------------------------------------------

    def is_ready(self) -> bool:
        """Whether the API answers. Uses ``GET /progress``: it exists under ``--nowebui`` and in
        UI mode alike (``/internal/ping`` is UI-only). A 401 raises: waiting will not fix it."""
        try:
            self.progress(read_timeout=min(self.connect_timeout, QUICK_READ_TIMEOUT))
        except (WebUIUnreachable, WebUIServerError, WebUIRequestRejected):
            return False
        except WebUIError as e:
            if e.retryable:
                return False
            raise
        return True

    def wait_until_ready(self, timeout: float, *, interval: float = 0.5) -> None:
        """Poll :meth:`is_ready` until it is true; ``WebUIUnreachable`` after ``timeout`` s."""
        deadline = time.monotonic() + timeout
        while True:
            if self.is_ready():
                return
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                raise WebUIUnreachable(
                    f"WebUI not ready after {timeout:g}s", url=f"{self.base_url}{API}/progress"
                )
            time.sleep(min(interval, remaining))

    # -- plumbing ----------------------------------------------------------------------------

    def _quick(self) -> float:
        return min(self.read_timeout, QUICK_READ_TIMEOUT)

    def _request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: Mapping[str, str] | None = None,
        read_timeout: float | None = None,
    ) -> Any:
        """Send one call and return the decoded JSON (``None`` for 204 / empty / ``null``).

        The one place where ``requests`` exceptions become :class:`WebUIError`s.
        """
        url = self.base_url + path
        timeout = (self.connect_timeout, read_timeout or self.read_timeout)
        started = time.monotonic()
        try:
            response = self._session.request(
                method, url, json=json, params=params, auth=self._auth, timeout=timeout
            )
        except requests.RequestException as e:
            raise error_for_exception(e, url) from e
        logger.debug(
            "%s %s -> %s in %.2fs",
            method,
            path,
            response.status_code,
            time.monotonic() - started,
        )
        if not 200 <= response.status_code < 300:
            raise error_for_response(response.status_code, response.text, url)
        if response.status_code == 204 or not response.content:
            return None
        try:
            return response.json()
        except ValueError as e:
            raise WebUIServerError(
                "WebUI answered with something that is not JSON",
                url=url,
                status=response.status_code,
                body=response.text,
            ) from e

    def _json_object(
        self,
        method: str,
        path: str,
        body: Mapping[str, Any] | None,
        read_timeout: float | None,
        *,
        params: Mapping[str, str] | None = None,
    ) -> dict[str, Any]:
        data = self._request(
            method,
            API + path,
            json=dict(body) if body is not None else None,
            params=params,
            read_timeout=read_timeout,
        )
        if not isinstance(data, dict):
            raise self._shape_error(path, "a JSON object", data)
        return data

    def _json_list(self, path: str) -> list[dict[str, Any]]:
        data = self._request("GET", API + path)
        if not isinstance(data, list):
            raise self._shape_error(path, "a JSON list", data)
        return [item for item in data if isinstance(item, dict)]

    def _shape_error(self, path: str, expected: str, data: Any) -> WebUIServerError:
        return WebUIServerError(
            f"WebUI answered {path} with {type(data).__name__}, expected {expected}",
            url=self.base_url + API + path,
            body=json.dumps(data)[:200],
            retryable=False,
        )

    def _image(self, value: Any, path: str) -> bytes:
        try:
            return decode_b64(str(value or ""))
        except ValueError as e:
            raise self._shape_error(path, "base64 image data", "<undecodable>") from e

    def _processing(
        self, path: str, payload: Mapping[str, Any], read_timeout: float | None
    ) -> dict[str, Any]:
        """A call that holds the WebUI's generation lock; a timeout stops it (class doc)."""
        try:
            return self._json_object("POST", path, payload, read_timeout)
        except WebUITimeout as e:
            waited = read_timeout or self.read_timeout
            started = time.monotonic()
            if self.stop_generation():
                raise WebUITimeout(
                    f"WebUI did not answer within {waited:g}s; interrupted it, idle again "
                    f"after {time.monotonic() - started:.1f}s",
                    url=e.url,
                ) from e
            # A retry now would only queue behind the hung job.
            raise WebUITimeout(
                f"WebUI did not answer within {waited:g}s and was still busy "
                f"{self.settle_timeout:g}s after an interrupt; not retried",
                url=e.url,
                retryable=False,
            ) from e

    def _generate(
        self, path: str, payload: Mapping[str, Any], read_timeout: float | None
    ) -> GenerationResult:
        data = self._processing(path, payload, read_timeout)
        info = data.get("info")
        if isinstance(info, str):
            try:
                info = json.loads(info)
            except ValueError:
                info = {"text": info}
        result = GenerationResult(
            images=tuple(self._image(i, path) for i in data.get("images") or []),
            parameters=dict(data.get("parameters") or {}),
            info=info if isinstance(info, dict) else {},
        )
        reason = _interrupts.partial_answer(self, result, payload)
        if reason:
            raise InterruptedGeneration(
                f"generation was interrupted ({reason}); {len(result.images)} partial image(s)",
                result=result,
                url=self.base_url + API + path,
            )
        return result
