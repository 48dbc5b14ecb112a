"""Base64 image helpers shared by the client and the simulator (A1111 wire conventions)."""

from __future__ import annotations

import base64
import binascii

DATA_URI_PREFIX = "data:image/png;base64,"


def encode_b64(data: bytes) -> str:
    """Raw base64, no ``data:`` prefix: what A1111 answers with."""
    return base64.b64encode(data).decode("ascii")


def to_data_uri(png: bytes) -> str:
    """``data:image/png;base64,...``: what clients send as ``init_images`` / extras input."""
    return DATA_URI_PREFIX + encode_b64(png)


def decode_b64(value: str) -> bytes:
    """Decode base64 image data, stripping a ``data:...;base64,`` prefix as A1111 does.

    Raises ``ValueError`` when the text is not base64.
    """
    if value.startswith("data:"):
        value = value.split(",", 1)[1] if "," in value else ""
    try:
        return base64.b64decode(value, validate=True)
    except (binascii.Error, ValueError) as e:
        raise ValueError("not valid base64 image data") from e
