"""Static galleries: every job is shown, every referenced file exists (thumbnails made once,
next to their image), filters list slot values and statuses, and history statuses show jobs
that have no images."""

from __future__ import annotations

import html
from html.parser import HTMLParser
from pathlib import Path

from stablenew.gallery import PendingJob, refresh_pack, write_index
from stablenew.gallery.thumbs import thumb_path
from tests.gallery.conftest import write_outputs


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.refs: list[str] = []
        self.jobs: list[str] = []
        self.options: list[tuple[str, str]] = []
        self._select = ""

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        a = dict(attrs)
        for name in ("href", "src"):
            if a.get(name):
                self.refs.append(a[name] or "")
        if tag == "button" and a.get("data-copy"):
            self.jobs.append((a["data-copy"] or "").removeprefix("stablenew explain "))
        if tag == "select":
            self._select = a.get("data-attr") or ""
        if tag == "option" and a.get("value"):
            self.options.append((self._select, a["value"] or ""))


def _parse(page: Path) -> _Links:
    parser = _Links()
    parser.feed(page.read_text(encoding="utf-8"))
    return parser


def _assert_refs_exist(page: Path, parser: _Links) -> None:
    assert parser.refs
    for ref in parser.refs:
        assert "://" not in ref, ref  # relative: works from disk and served alike
        assert not ref.startswith("/"), ref
        assert (page.parent / ref).is_file(), ref


def test_pack_gallery_shows_every_job_and_references_only_existing_files(
    tmp_path: Path, fox
) -> None:
    pack, records = fox
    root = tmp_path / "out"
    write_outputs(root, records)
    done = refresh_pack(root, "fox-matrix", pack=pack)
    parser = _parse(done.gallery)
    _assert_refs_exist(done.gallery, parser)
    assert sorted(parser.jobs) == sorted(r.job_id for r in records)
    text = done.gallery.read_text(encoding="utf-8")
    for r in records:
        assert f"{r.seed}" in text
        assert r.model in text
        assert html.escape(r.prompt) in text
    assert ("data-slot-season", "autumn") in parser.options
    assert ("data-slot-style", "watercolor") in parser.options
    assert any(ref.endswith("_grid/sheet.png") for ref in parser.refs)
    # Thumbnails sit next to their image and are made once.
    thumbs = [root / "fox-matrix" / ref for ref in parser.refs if ref.endswith(".thumb.jpg")]
    assert len(thumbs) == len(records)
    before = {t: t.stat().st_mtime_ns for t in thumbs}
    refresh_pack(root, "fox-matrix", pack=pack)
    assert {t: t.stat().st_mtime_ns for t in thumbs} == before


def test_index_for_everything_and_jobs_known_only_to_history(tmp_path: Path, fox) -> None:
    _, records = fox
    root = tmp_path / "out"
    write_outputs(root, records[:5])
    failed = records[5]
    known = [
        PendingJob("fox-matrix", failed.job_id, "failed", failed.prompt, failed.matrix_slot_values),
        PendingJob("fox-matrix", records[0].job_id, "running"),  # a re-run in progress
    ]
    index = write_index(root, known)
    parser = _parse(index)
    _assert_refs_exist(index, parser)
    assert sorted(parser.jobs) == sorted(r.job_id for r in records)
    assert ("data-status", "failed") in parser.options
    assert ("data-status", "running") in parser.options
    assert ("data-status", "completed") in parser.options
    pack_page = root / "fox-matrix" / "index.html"
    _assert_refs_exist(pack_page, _parse(pack_page))


def test_thumbnail_is_remade_when_the_image_changes(tmp_path: Path, fox) -> None:
    from stablenew.gallery import thumbnail

    _, records = fox
    root = tmp_path / "out"
    write_outputs(root, records[:1])
    image = next((root / "fox-matrix").glob("*/latest/000.png"))
    thumb = thumbnail(image)
    assert thumb == thumb_path(image)
    assert thumb.parent == image.parent
    first = thumb.stat().st_mtime_ns
    assert thumbnail(image).stat().st_mtime_ns == first
    import os

    os.utime(image, ns=(first + 10**9, first + 10**9))
    assert thumbnail(image).stat().st_mtime_ns > first
