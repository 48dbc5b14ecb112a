"""Looking at what packs made: X/Y contact sheets, static HTML galleries, thumbnails, and a
read-only loopback file server. Pure Pillow and files: no Prefect, no HTTP client.

Everything is rebuilt from the output folders (see :mod:`stablenew.outputs`), so any of it can
be deleted and made again with ``stablenew grid`` / ``stablenew gallery``.
"""

from __future__ import annotations

from stablenew.gallery.catalog import GRID_DIR, JobEntry, list_packs, scan_pack
from stablenew.gallery.html import PendingJob, write_index, write_pack_gallery
from stablenew.gallery.refresh import Refreshed, pack_axes, refresh_pack
from stablenew.gallery.serve import GalleryServer, running_server_url, serving
from stablenew.gallery.sheet import GridAxes, GridError, SheetSet, build_sheets
from stablenew.gallery.thumbs import thumbnail

__all__ = [
    "GRID_DIR",
    "GalleryServer",
    "GridAxes",
    "GridError",
    "JobEntry",
    "PendingJob",
    "Refreshed",
    "SheetSet",
    "build_sheets",
    "list_packs",
    "pack_axes",
    "refresh_pack",
    "running_server_url",
    "scan_pack",
    "serving",
    "thumbnail",
    "write_index",
    "write_pack_gallery",
]
