"""Deterministic stand-in images: a gradient and shapes derived from a hash of the inputs.

The picture depends only on what the caller passes (prompt, negative, seed, size, sampler,
steps, model, stage inputs), so the same request gives the same bytes, and different seeds or
prompts give visibly different images. PNGs carry every text chunk given (``parameters``...).
"""

from __future__ import annotations

import hashlib
import io
import json
from collections.abc import Mapping

from PIL import Image, ImageDraw
from PIL.PngImagePlugin import PngInfo

from stablenew.webui._images import decode_b64

_FILTERS = {"Nearest": Image.Resampling.NEAREST, "Lanczos": Image.Resampling.LANCZOS}


def digest(*parts: object) -> bytes:
    return hashlib.sha256(json.dumps(parts, default=str, ensure_ascii=False).encode()).digest()


def render(
    key: bytes, width: int, height: int, *, init: Image.Image | None = None, strength: float = 1.0
) -> Image.Image:
    """A ``width x height`` RGB picture from ``key``; blended over ``init`` by ``1 - strength``."""
    c1, c2 = tuple(key[0:3]), tuple(key[3:6])
    gradient = Image.linear_gradient("L").rotate(key[6] % 4 * 90).resize((width, height))
    img = Image.composite(
        Image.new("RGB", (width, height), c1), Image.new("RGB", (width, height), c2), gradient
    )
    draw = ImageDraw.Draw(img)
    for i in range(6):
        b = key[7 + i * 4 : 11 + i * 4]
        x, y = b[0] * width // 256, b[1] * height // 256
        r = max(4, b[2] * min(width, height) // 1024)
        color = tuple(key[(i * 5) % 29 : (i * 5) % 29 + 3])
        box = (x - r, y - r, x + r, y + r)
        if b[3] % 2:
            draw.ellipse(box, fill=color)
        else:
            draw.rectangle(box, fill=color)
    if init is not None:
        base = init.convert("RGB").resize((width, height), Image.Resampling.LANCZOS)
        img = Image.blend(base, img, max(0.0, min(1.0, strength)))
    return img


def encode_png(img: Image.Image, texts: Mapping[str, str]) -> bytes:
    """PNG bytes with one text chunk per item (``tEXt``, or ``iTXt`` if not latin-1)."""
    info = PngInfo()
    for k, v in texts.items():
        info.add_text(k, v)
    buf = io.BytesIO()
    img.save(buf, format="PNG", pnginfo=info, compress_level=1)
    return buf.getvalue()


def decode_image(value: str) -> Image.Image:
    """An input image (raw base64 or data URI); ``ValueError`` when it is not one."""
    try:
        img = Image.open(io.BytesIO(decode_b64(value)))
        img.load()
    except (OSError, ValueError) as e:
        raise ValueError("Invalid encoded image") from e
    return img


def text_chunks(img: Image.Image) -> dict[str, str]:
    """String entries of ``img.info`` (what A1111 copies into saved PNGs)."""
    return {k: v for k, v in img.info.items() if isinstance(k, str) and isinstance(v, str)}


def upscale(img: Image.Image, upscaler: str, width: int, height: int) -> Image.Image:
    """Resize with a filter picked by upscaler name (models use Lanczos here)."""
    rgb = img.convert("RGB")
    if (width, height) == rgb.size:
        return rgb
    return rgb.resize((width, height), _FILTERS.get(upscaler, Image.Resampling.LANCZOS))


def thumbnail(img: Image.Image) -> bytes:
    """A small PNG of a live preview."""
    small = img.copy()
    small.thumbnail((128, 128))
    return encode_png(small, {})


def grid(images: list[Image.Image], *, rows: int) -> Image.Image:
    """``images.image_grid``: ``rows`` rows, as many columns as needed, cell size of the first."""
    rows = max(1, min(rows, len(images)))
    cols = -(-len(images) // rows)
    w, h = images[0].size
    out = Image.new("RGB", (cols * w, rows * h), "black")
    for i, img in enumerate(images):
        out.paste(img.convert("RGB").resize((w, h)), ((i % cols) * w, (i // cols) * h))
    return out
