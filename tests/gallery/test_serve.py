"""The loopback file server: read-only, inside the output root only, thumbnails and sheets
made when first asked for, and announced in the data dir while it runs."""

from __future__ import annotations

import os
from pathlib import Path

import httpx

from stablenew.gallery import refresh_pack, running_server_url, serving
from stablenew.gallery.serve import SERVER_FILE
from tests.gallery.conftest import write_outputs


def test_serves_outputs_read_only_and_makes_thumbnails_on_request(tmp_path: Path, fox) -> None:
    pack, records = fox
    root, home = tmp_path / "out", tmp_path / "home"
    write_outputs(root, records)
    refresh_pack(root, "fox-matrix", pack=pack)
    job = records[0].job_id
    (root / "fox-matrix" / job / "latest" / "000.thumb.jpg").unlink()
    (root / "escape").symlink_to(tmp_path / "home", target_is_directory=True)
    home.mkdir()
    (home / "secret.txt").write_text("no")
    with serving(root, home) as server:
        assert server.url.startswith("http://127.0.0.1:")
        assert running_server_url(home, root) == server.url
        with httpx.Client(base_url=server.url) as http:
            thumb = http.get(f"/fox-matrix/{job}/latest/000.thumb.jpg")
            assert thumb.status_code == 200
            assert thumb.headers["content-type"] == "image/jpeg"
            assert http.get(f"/fox-matrix/{job}/latest/000.png").status_code == 200
            page = http.get("/fox-matrix/index.html")
            assert page.status_code == 200
            assert job in page.text
            assert http.get("/index.html").status_code == 200
            assert http.get("/fox-matrix/_grid/sheet.png").status_code == 200
            assert http.get("/escape/secret.txt").status_code == 404
            assert http.get("/../home/secret.txt").status_code == 404
            assert http.post(f"/fox-matrix/{job}/latest/000.png").status_code == 405
            assert http.delete(f"/fox-matrix/{job}/latest/000.png").status_code == 405
    assert not (home / SERVER_FILE).exists()
    assert running_server_url(home, root) is None


def test_sheet_is_rebuilt_when_a_job_finished_after_it(tmp_path: Path, fox) -> None:
    pack, records = fox
    root = tmp_path / "out"
    write_outputs(root, records[:3])
    first = refresh_pack(root, "fox-matrix", pack=pack)
    assert first.sheets is not None
    assert not first.sheets.complete
    layout = first.sheets.layout_path
    old = layout.stat().st_mtime_ns
    os.utime(layout, ns=(old - 10**9, old - 10**9))
    write_outputs(root, records)
    with serving(root) as server:
        assert httpx.get(f"{server.url}/fox-matrix/_grid/sheet.png").status_code == 200
    assert '"complete": true' in layout.read_text()


def test_a_stale_announcement_is_ignored(tmp_path: Path) -> None:
    home, root = tmp_path / "home", tmp_path / "out"
    home.mkdir()
    (home / SERVER_FILE).write_text(
        f'{{"url": "http://127.0.0.1:9", "root": "{root.resolve()}", "pid": 999999999}}'
    )
    assert running_server_url(home, root) is None
