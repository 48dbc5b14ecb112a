"""Thumbnails: made once per image with Pillow, cached next to it as ``NNN.thumb.jpg``.

Nothing on a worker's path between two jobs makes one: the gallery builder, the contact
sheets and the loopback file server make them when first needed (see :mod:`.serve`), so a
thumbnail costs the GPU nothing. A cached thumbnail is reused while it is newer than its image.
"""

from __future__ import annotations

import os
import threading
from pathlib import Path

from PIL import Image

THUMB_SUFFIX = ".thumb.jpg"
THUMB_MAX_SIDE = 256
_JPEG_QUALITY = 82


def thumb_path(image: Path) -> Path:
    """Where the thumbnail of ``image`` is cached: ``000.png`` -> ``000.thumb.jpg``."""
    return image.with_name(image.stem + THUMB_SUFFIX)


def image_for_thumb(thumb: Path) -> Path | None:
    """The image a thumbnail path stands for (``000.thumb.jpg`` -> ``000.png``), if any."""
    if not thumb.name.endswith(THUMB_SUFFIX):
        return None
    return thumb.with_name(thumb.name.removesuffix(THUMB_SUFFIX) + ".png")


def thumbnail(image: Path, max_side: int = THUMB_MAX_SIDE) -> Path:
    """The cached thumbnail of ``image`` (a PNG), made now if missing or older than it."""
    target = thumb_path(image)
    try:
        if target.stat().st_mtime_ns >= image.stat().st_mtime_ns:
            return target
    except FileNotFoundError:
        pass
    with Image.open(image) as img:
        img.thumbnail((max_side, max_side), Image.Resampling.LANCZOS, reducing_gap=2.0)
        small = img.convert("RGB")
    # A unique temporary name: two processes or threads may make the same thumbnail at once.
    tmp = target.with_name(f".{target.name}.{os.getpid()}-{threading.get_ident()}.tmp")
    small.save(tmp, "JPEG", quality=_JPEG_QUALITY, optimize=True)
    os.replace(tmp, target)
    return target
