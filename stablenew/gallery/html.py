"""Static galleries: ``<output_root>/<pack>/index.html`` per pack and ``<output_root>/index.html``
for everything.

Plain HTML and a few lines of vanilla JavaScript for the filters (slot values, status, pack);
every link is relative, so a page works opened from disk (``file://``) and served by
:mod:`.serve` alike. Each card shows the thumbnail (linking to the full PNG), the resolved
prompt, seed, model and slot values, and the job's ``stablenew explain`` command to copy.
Every file a page references exists when it is written: thumbnails are made (once) first.
"""

from __future__ import annotations

import html
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, replace
from pathlib import Path

from stablenew.gallery.catalog import GRID_DIR, JobEntry, list_packs, pack_dir, scan_pack
from stablenew.gallery.thumbs import thumbnail

INDEX = "index.html"


@dataclass(frozen=True, slots=True)
class PendingJob:
    """A job as history knows it: its status, and (when it has no images on disk) a card."""

    pack_id: str
    job_id: str
    status: str
    prompt: str = ""
    slots: Mapping[str, str] | None = None


def _e(value: object) -> str:
    return html.escape(str(value), quote=True)


def _rel(path: Path, page_dir: Path) -> str:
    return Path(os.path.relpath(path, page_dir)).as_posix()


def _card(job: JobEntry, page_dir: Path, root: Path) -> str:
    r = job.record
    slots = job.slots
    attrs = " ".join(f'data-slot-{_e(k.lower())}="{_e(v)}"' for k, v in slots.items())
    latest = pack_dir(root, job.pack_id) / job.run_dir.parent.name / "latest"
    figures = []
    for image in job.images:
        thumbnail(image.path)  # made once, cached next to the image
        full = latest / image.path.name
        thumb = latest / (image.path.stem + ".thumb.jpg")
        seed = image.seed if image.seed is not None else r.get("seed")
        figures.append(
            f'<a href="{_e(_rel(full, page_dir))}"><img loading="lazy" '
            f'src="{_e(_rel(thumb, page_dir))}" alt="{_e(job.job_id)} seed {_e(seed)}"></a>'
        )
    slot_text = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in slots.items())
    seeds = ", ".join(str(i.seed) for i in job.images if i.seed is not None) or r.get("seed")
    return (
        f'<article class="card" data-pack="{_e(job.pack_id)}" data-status="{_e(job.status)}" '
        f"{attrs}>{''.join(figures)}"
        f'<p class="prompt">{_e(r.get("prompt", ""))}</p>'
        f'<ul class="meta"><li><b>seed</b>: {_e(seeds)}</li>'
        f"<li><b>model</b>: {_e(r.get('model', ''))}</li>{slot_text}"
        f'<li><b>status</b>: <span class="status">{_e(job.status)}</span></li></ul>'
        f'<p class="explain"><code>stablenew explain {_e(job.job_id)}</code>'
        f'<button type="button" data-copy="stablenew explain {_e(job.job_id)}">copy</button></p>'
        "</article>"
    )


def _pending_card(job: PendingJob) -> str:
    slots = dict(job.slots or {})
    attrs = " ".join(f'data-slot-{_e(k.lower())}="{_e(v)}"' for k, v in slots.items())
    slot_text = "".join(f"<li><b>{_e(k)}</b>: {_e(v)}</li>" for k, v in slots.items())
    return (
        f'<article class="card pending" data-pack="{_e(job.pack_id)}" '
        f'data-status="{_e(job.status)}" {attrs}><div class="noimage">{_e(job.status)}</div>'
        f'<p class="prompt">{_e(job.prompt)}</p><ul class="meta">{slot_text}'
        f'<li><b>status</b>: <span class="status">{_e(job.status)}</span></li></ul>'
        f'<p class="explain"><code>stablenew explain {_e(job.job_id)}</code>'
        f'<button type="button" data-copy="stablenew explain {_e(job.job_id)}">copy</button></p>'
        "</article>"
    )


_STYLE = """
body{font:14px system-ui,sans-serif;margin:16px;background:#fafafa;color:#222}
h1{font-size:20px;margin:0 0 8px} .filters{margin:8px 0 16px;display:flex;gap:12px;flex-wrap:wrap}
.grid{display:grid;grid-template-columns:repeat(auto-fill,minmax(260px,1fr));gap:12px}
.card{background:#fff;border:1px solid #ddd;border-radius:6px;padding:8px}
.card img{max-width:100%;display:block;margin:0 auto 6px}
.noimage{height:160px;display:flex;align-items:center;justify-content:center;background:#eee}
.prompt{margin:4px 0;font-size:13px} .meta{list-style:none;padding:0;margin:4px 0;font-size:12px}
.explain code{font-size:11px;user-select:all;word-break:break-all} .explain button{margin-left:4px}
.sheets img{max-width:100%;border:1px solid #ddd} .hidden{display:none}
"""

_SCRIPT = """
const cards=[...document.querySelectorAll('.card')];
const selects=[...document.querySelectorAll('.filters select')];
function apply(){cards.forEach(c=>{const ok=selects.every(s=>!s.value||
 c.getAttribute(s.dataset.attr)===s.value);c.classList.toggle('hidden',!ok);});
 document.getElementById('shown').textContent=cards.filter(c=>!c.classList.contains('hidden')).length;}
selects.forEach(s=>s.addEventListener('change',apply));
document.querySelectorAll('button[data-copy]').forEach(b=>b.addEventListener('click',()=>{
 navigator.clipboard&&navigator.clipboard.writeText(b.dataset.copy);b.textContent='copied';}));
"""


def _filters(options: Mapping[str, Sequence[str]]) -> str:
    parts = []
    for (label, attr), values in ((k.split("|", 1), v) for k, v in options.items()):
        if len(values) < 2:
            continue
        opts = "".join(f'<option value="{_e(v)}">{_e(v)}</option>' for v in values)
        parts.append(
            f'<label>{_e(label)} <select data-attr="{_e(attr)}">'
            f'<option value="">all</option>{opts}</select></label>'
        )
    return f'<div class="filters">{"".join(parts)}</div>' if parts else ""


def _page(
    title: str,
    jobs: Sequence[JobEntry],
    pending: Sequence[PendingJob],
    page_dir: Path,
    root: Path,
    *,
    header: str = "",
) -> str:
    known = {p.job_id: p.status for p in pending}
    jobs = [replace(j, status=known.get(j.job_id, j.status)) for j in jobs]
    on_disk = {j.job_id for j in jobs}
    pending = [p for p in pending if p.job_id not in on_disk]
    options: dict[str, list[str]] = {}

    def add(key: str, value: str) -> None:
        values = options.setdefault(key, [])
        if value not in values:
            values.append(value)

    for job in jobs:
        add("pack|data-pack", job.pack_id)
        for k, v in job.slots.items():
            add(f"{k}|data-slot-{k.lower()}", v)
        add("status|data-status", job.status)
    for p in pending:
        add("pack|data-pack", p.pack_id)
        for k, v in (p.slots or {}).items():
            add(f"{k}|data-slot-{k.lower()}", v)
        add("status|data-status", p.status)
    cards = [_card(j, page_dir, root) for j in jobs] + [_pending_card(p) for p in pending]
    total = len(cards)
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        f"<title>{_e(title)}</title><style>{_STYLE}</style></head><body>"
        f"<h1>{_e(title)}</h1>{header}"
        f'<p><span id="shown">{total}</span> of {total} job(s)</p>'
        f'{_filters(options)}<div class="grid">{"".join(cards)}</div>'
        f"<script>{_SCRIPT}</script></body></html>"
    )


def _write(path: Path, text: str) -> Path:
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text, encoding="utf-8")
    os.replace(tmp, path)
    return path


def write_pack_gallery(output_root: Path, pack_id: str, pending: Sequence[PendingJob] = ()) -> Path:
    """Write ``<output_root>/<pack>/index.html`` from what is on disk; returns its path."""
    root = output_root.resolve()
    directory = pack_dir(root, pack_id)
    directory.mkdir(parents=True, exist_ok=True)
    jobs = scan_pack(root, pack_id)
    sheets = sorted((directory / GRID_DIR).glob("sheet*.png"))
    header = (
        '<div class="sheets"><h2>Contact sheets</h2>'
        + "".join(
            f'<a href="{_e(_rel(s, directory))}"><img src="{_e(_rel(s, directory))}" '
            f'alt="contact sheet {_e(s.name)}"></a>'
            for s in sheets
        )
        + "</div>"
        if sheets
        else ""
    )
    header += f'<p><a href="{_e(_rel(root / INDEX, directory))}">all packs</a></p>'
    title = f"{pack_id}: {jobs[0].record.get('pack_title') or pack_id}" if jobs else pack_id
    ours = [p for p in pending if p.pack_id == pack_id]
    return _write(directory / INDEX, _page(title, jobs, ours, directory, root, header=header))


def write_index(output_root: Path, pending: Sequence[PendingJob] = ()) -> Path:
    """Write every pack's gallery and ``<output_root>/index.html`` with every job."""
    root = output_root.resolve()
    root.mkdir(parents=True, exist_ok=True)
    packs = list_packs(root)
    jobs: list[JobEntry] = []
    for pack in packs:
        write_pack_gallery(root, pack, pending)
        jobs.extend(scan_pack(root, pack))
    links = " · ".join(
        f'<a href="{_e(_rel(pack_dir(root, p) / INDEX, root))}">{_e(p)}</a>' for p in packs
    )
    header = f"<p>Packs: {links}</p>" if links else "<p>No images yet.</p>"
    return _write(
        root / INDEX, _page("StableNew gallery", jobs, pending, root, root, header=header)
    )
