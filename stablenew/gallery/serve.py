"""A read-only file server for the output root, on loopback.

``stablenew gallery --serve`` runs it; the embedded stack can run it beside the Prefect server
so the Prefect UI's artifacts can show images. GET and HEAD only; paths resolve inside the
root (symlinks such as ``latest`` included) or answer 404. Work is done when asked for, never
on a worker's path: a missing ``NNN.thumb.jpg`` is made from ``NNN.png`` on first request, a
pack's ``index.html`` and contact sheets are rebuilt when a job finished after them.

While it runs, ``<home>/gallery-server.json`` says where (``url``, ``root``, ``pid``), so the
render flow can link images in its artifacts (:func:`running_server_url`).
"""

from __future__ import annotations

import contextlib
import functools
import json
import os
import threading
from collections.abc import Iterator
from http import HTTPStatus
from http.server import SimpleHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from typing import Any
from urllib.parse import unquote, urlsplit

from stablenew.gallery.catalog import GRID_DIR, pack_dir
from stablenew.gallery.html import INDEX, write_index, write_pack_gallery
from stablenew.gallery.sheet import LAYOUT, GridError, build_sheets, stored_axes
from stablenew.gallery.thumbs import image_for_thumb, thumbnail
from stablenew.outputs import LATEST

SERVER_FILE = "gallery-server.json"
_lock = threading.Lock()  # one rebuild at a time


def _newest_job_mtime(directory: Path) -> int:
    newest = 0
    with contextlib.suppress(OSError):
        for entry in os.scandir(directory):
            if entry.name.startswith(("_", ".")) or not entry.is_dir():
                continue
            with contextlib.suppress(OSError):
                newest = max(newest, os.lstat(Path(entry.path) / LATEST).st_mtime_ns)
    return newest


def _stale(target: Path, pack: Path) -> bool:
    try:
        return target.stat().st_mtime_ns < _newest_job_mtime(pack)
    except FileNotFoundError:
        return True


class _Handler(SimpleHTTPRequestHandler):
    root: Path

    def __init__(self, *args: Any, root: Path, **kwargs: Any) -> None:
        self.root = root
        super().__init__(*args, directory=str(root), **kwargs)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def end_headers(self) -> None:
        self.send_header("Cache-Control", "no-cache")
        self.send_header("X-Content-Type-Options", "nosniff")
        super().end_headers()

    def send_head(self) -> Any:
        target = Path(self.translate_path(self.path))
        try:
            resolved = target.resolve()
        except OSError:
            resolved = target
        if not resolved.is_relative_to(self.root):
            self.send_error(HTTPStatus.NOT_FOUND)
            return None
        with contextlib.suppress(OSError, GridError, ValueError):
            self._prepare(target)
        return super().send_head()

    def _prepare(self, target: Path) -> None:
        """Make what a request asks for when it is missing or older than the jobs."""
        parts = target.relative_to(self.root).parts if target != self.root else ()
        source = image_for_thumb(target)
        if source is not None and source.is_file():
            thumbnail(source)
        elif parts in ((), (INDEX,)):
            with _lock:
                write_index(self.root)
        elif len(parts) == 2 and parts[1] == INDEX:
            pack = pack_dir(self.root, parts[0])
            if _stale(pack / INDEX, pack):
                with _lock:
                    write_pack_gallery(self.root, parts[0])
        elif len(parts) == 3 and parts[1] == GRID_DIR and parts[2] != LAYOUT:
            pack = pack_dir(self.root, parts[0])
            if _stale(pack / GRID_DIR / LAYOUT, pack):
                with _lock:
                    build_sheets(self.root, parts[0], **stored_axes(self.root, parts[0]))

    def do_POST(self) -> None:
        self.send_error(HTTPStatus.METHOD_NOT_ALLOWED)

    do_PUT = do_DELETE = do_PATCH = do_POST


class GalleryServer:
    """The server and its thread; ``url`` ends without a slash."""

    def __init__(self, root: Path, *, host: str = "127.0.0.1", port: int = 0) -> None:
        self.root = root.resolve()
        self.root.mkdir(parents=True, exist_ok=True)
        handler = functools.partial(_Handler, root=self.root)
        self.httpd = ThreadingHTTPServer((host, port), handler)
        self.httpd.daemon_threads = True
        self.url = f"http://{host}:{self.httpd.server_address[1]}"
        self._thread: threading.Thread | None = None

    def start(self) -> GalleryServer:
        self._thread = threading.Thread(target=self.httpd.serve_forever, daemon=True)
        self._thread.start()
        return self

    def wait(self) -> None:
        """Block until the server stops (Ctrl-C interrupts it)."""
        while self._thread is not None and self._thread.is_alive():
            self._thread.join(0.5)

    def stop(self) -> None:
        self.httpd.shutdown()
        self.httpd.server_close()
        if self._thread is not None:
            self._thread.join(timeout=5)


def announce(home: Path, server: GalleryServer) -> Path:
    """Write ``<home>/gallery-server.json`` so the render flow can link to ``server``."""
    path = home / SERVER_FILE
    home.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{SERVER_FILE}.{os.getpid()}.tmp")
    data = {"url": server.url, "root": str(server.root), "pid": os.getpid()}
    tmp.write_text(json.dumps(data), encoding="utf-8")
    os.replace(tmp, path)
    return path


def withdraw(home: Path, server: GalleryServer) -> None:
    """Remove ``<home>/gallery-server.json`` if it still names ``server``."""
    path = home / SERVER_FILE
    with contextlib.suppress(OSError, ValueError):
        if json.loads(path.read_text(encoding="utf-8")).get("url") == server.url:
            path.unlink()


@contextlib.contextmanager
def serving(root: Path, home: Path | None = None, *, port: int = 0) -> Iterator[GalleryServer]:
    """Serve ``root`` on 127.0.0.1 in a thread for the block (announced in ``home`` if given)."""
    server = GalleryServer(root, port=port).start()
    if home is not None:
        announce(home, server)
    try:
        yield server
    finally:
        if home is not None:
            withdraw(home, server)
        server.stop()


def _alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def running_server_url(home: Path, output_root: Path) -> str | None:
    """The URL of the announced server serving ``output_root``, if one is running."""
    try:
        data = json.loads((home / SERVER_FILE).read_text(encoding="utf-8"))
        if Path(data["root"]) != output_root.resolve() or not _alive(int(data["pid"])):
            return None
        return str(data["url"])
    except (OSError, ValueError, KeyError, TypeError):
        return None


def url_for(base: str, root: Path, path: Path) -> str | None:
    """``base`` + the path of ``path`` under ``root`` (None if it lies elsewhere)."""
    from urllib.parse import quote

    try:
        rel = path.relative_to(root)
    except ValueError:
        return None
    return f"{base}/{quote(rel.as_posix())}"


def path_of(url: str, root: Path) -> Path:
    """The file a server URL stands for (tests)."""
    return root / unquote(urlsplit(url).path.lstrip("/"))
