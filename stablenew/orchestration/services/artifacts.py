"""What a render run shows in the Prefect UI: its images, and its pack's contact sheet.

Measured against Prefect 3.8's UI (bench/screenshots.py): a markdown artifact renders an
image given by a ``http://127.0.0.1:...`` URL, by a ``data:`` URI, and by an ``<img>`` tag,
but not an image inside a link (``[![alt](thumb)](full)`` shows as text).
Runs link their images at the loopback file server (:mod:`stablenew.gallery.serve`), which
makes the thumbnail when the UI first asks for it: the worker only writes a few lines of
markdown, so a run's artifact costs the GPU path nothing more than the table it replaces.
Without a running file server the artifact lists paths and says how to start one.

Each pack also has a keyed artifact (``pack-<pack id>``, listed on the Artifacts page) with
its contact sheet and gallery links; the worker updates it at most every
:data:`PACK_ARTIFACT_INTERVAL` seconds per pack, and the ``run`` command at the end.
"""

from __future__ import annotations

import logging
import os
import re
import threading
import time
from collections.abc import Awaitable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any
from uuid import UUID

from stablenew.gallery.catalog import GRID_DIR, pack_dir
from stablenew.gallery.serve import running_server_url, url_for
from stablenew.gallery.thumbs import thumb_path
from stablenew.outputs import LATEST
from stablenew.records import NormalizedJobRecord
from stablenew.settings import get_settings

Logger = logging.Logger | logging.LoggerAdapter[logging.Logger]
logger = logging.getLogger("stablenew.artifacts")

PACK_ARTIFACT_INTERVAL = 10.0  # seconds between a worker's updates of one pack's artifact
_last_pack_update: dict[str, float] = {}
_throttle_lock = threading.Lock()

if TYPE_CHECKING:
    from prefect.client.orchestration import PrefectClient
    from prefect.client.schemas.actions import ArtifactCreate


def pack_artifact_key(pack_id: str) -> str:
    """Prefect artifact keys allow lowercase letters, digits and dashes only."""
    return "pack-" + re.sub(r"[^a-z0-9-]+", "-", pack_id.lower()).strip("-")


def _md(text: str) -> str:
    """Text safe inside markdown (no markup, no HTML)."""
    return re.sub(r"([\\`*_{}\[\]()<>#+!|])", r"\\\1", text.replace("\n", " "))


def run_artifact_markdown(
    record: NormalizedJobRecord,
    outputs: Sequence[dict[str, Any]],
    *,
    server_url: str | None,
    output_root: Path,
) -> str:
    """Markdown for one run: thumbnails (linking the full PNG) when a file server runs."""
    root = output_root.resolve()
    lines = [f"### {_md(record.run_name)}", "", f"**Prompt:** {_md(record.prompt)}", ""]
    if record.matrix_slot_values:
        slots = ", ".join(f"{k} = {v}" for k, v in record.matrix_slot_values.items())
        lines += [f"**Slots:** {_md(slots)}", ""]
    images = []
    for out in outputs:
        path = Path(out["path"])
        full = url_for(server_url, root, path) if server_url else None
        thumb = url_for(server_url, root, thumb_path(path)) if server_url else None
        if full and thumb:
            # Prefect's UI does not render an image inside a link: image, then the link.
            images += [f"![seed {out.get('seed')}]({thumb})", "", f"[full PNG]({full})", ""]
    lines += images
    lines += ["| image | seed | size |", "|---|---|---|"]
    lines += [
        f"| `{out['path']}` | {out.get('seed')} | {out.get('size') or ''} |" for out in outputs
    ]
    lines += ["", f"Model `{record.model}`. Details: `stablenew explain {record.job_id}`"]
    if not server_url:
        lines += ["", "Images show here while `stablenew gallery --serve` (or the stack) runs."]
    return "\n".join(lines)


def _jobs_on_disk(directory: Path) -> int:
    try:
        return sum(
            1
            for e in os.scandir(directory)
            if not e.name.startswith(("_", ".")) and os.path.lexists(Path(e.path) / LATEST)
        )
    except OSError:
        return 0


def pack_artifact_markdown(
    pack_id: str,
    *,
    server_url: str | None,
    output_root: Path,
    expected_jobs: int | None = None,
) -> str:
    """Markdown for a pack: its contact sheet(s), the gallery link and how far it got."""
    root = output_root.resolve()
    directory = pack_dir(root, pack_id)
    done = _jobs_on_disk(directory)
    of = f" of {expected_jobs}" if expected_jobs is not None else ""
    lines = [f"## Pack {_md(pack_id)}", "", f"{done}{of} job(s) with images on disk.", ""]
    sheets = sorted((directory / GRID_DIR).glob("sheet*.png")) or [
        directory / GRID_DIR / "sheet.png"
    ]
    if server_url:
        for sheet in sheets:
            url = url_for(server_url, root, sheet)
            lines += [f"![contact sheet]({url})", "", f"[{sheet.name}]({url})", ""]
        gallery = url_for(server_url, root, directory / "index.html")
        lines += [f"**Gallery:** [{gallery}]({gallery})", ""]
    else:
        lines += [
            f"Gallery: `{directory / 'index.html'}`; contact sheet: `stablenew grid {pack_id}`; "
            f"serve both to see them here: `stablenew gallery {pack_id} --serve`.",
            "",
        ]
    return "\n".join(lines)


def pack_artifact_due(pack_id: str, *, now: float | None = None) -> bool:
    """True at most once per :data:`PACK_ARTIFACT_INTERVAL` per pack in this process."""
    now = time.monotonic() if now is None else now
    with _throttle_lock:
        last = _last_pack_update.get(pack_id)
        if last is not None and now - last < PACK_ARTIFACT_INTERVAL:
            return False
        _last_pack_update[pack_id] = now
        return True


def run_artifact(
    record: NormalizedJobRecord,
    outputs: Sequence[dict[str, Any]],
    flow_run_id: UUID | None = None,
) -> ArtifactCreate:
    """The run's markdown artifact: its images, linked at the loopback file server."""
    from prefect.client.schemas.actions import ArtifactCreate

    settings = get_settings()
    home, output_root = settings.home, settings.resolved_output_root
    server = running_server_url(home, output_root)
    return ArtifactCreate(
        type="markdown",
        data=run_artifact_markdown(record, outputs, server_url=server, output_root=output_root),
        description=f"Outputs of {record.run_name} ({record.job_id})",
        flow_run_id=flow_run_id,
    )


async def apublish_run_artifacts(
    record: NormalizedJobRecord,
    outputs: Sequence[dict[str, Any]],
    *,
    run: tuple[PrefectClient, UUID] | None = None,
    log: Logger | None = None,
) -> None:
    """Create the run's markdown artifact, and the pack's keyed one when due: for the flow
    run of the current context, or for ``run`` (a client and a flow run id) outside one.

    The job is done when this is called (its images are written): an API that stays
    unreachable through the client's retries costs the run its artifact, never the job
    (the run would end FAILED once the API is back, and nothing would run it again)."""
    from prefect.artifacts import acreate_markdown_artifact

    async def publish() -> None:
        if run is None:
            artifact = run_artifact(record, outputs)
            await acreate_markdown_artifact(
                markdown=str(artifact.data), description=artifact.description
            )
        else:
            await run[0].create_artifact(run_artifact(record, outputs, run[1]))
        await _publish_pack_artifact_if_due(record, run)

    await _unless_unreachable(publish(), log, "The run's artifact")


async def apublish_pack_artifact_if_due(
    record: NormalizedJobRecord, *, run: tuple[PrefectClient, UUID], log: Logger | None = None
) -> None:
    """The pack's keyed artifact, when due (:func:`pack_artifact_due`), linked to ``run``; an
    unreachable API costs the update, as in :func:`apublish_run_artifacts`."""
    publishing = _publish_pack_artifact_if_due(record, run)
    await _unless_unreachable(publishing, log, "The pack's artifact")


async def _publish_pack_artifact_if_due(
    record: NormalizedJobRecord, run: tuple[PrefectClient, UUID] | None
) -> None:
    if pack_artifact_due(record.pack_id):
        settings = get_settings()
        await apublish_pack_artifact(
            record.pack_id,
            home=settings.home,
            output_root=settings.resolved_output_root,
            flow_run_id=run[1] if run is not None else None,
            client=run[0] if run is not None else None,
        )


async def _unless_unreachable(publishing: Awaitable[None], log: Logger | None, what: str) -> None:
    from stablenew.orchestration._prefect import api_unavailable

    try:
        await publishing
    except Exception as exc:
        if not api_unavailable(exc):
            raise
        (log or logger).warning(
            "%s was not created: the Prefect API is unreachable (%r)", what, exc
        )


async def apublish_pack_artifact(
    pack_id: str,
    *,
    home: Path,
    output_root: Path,
    expected_jobs: int | None = None,
    flow_run_id: UUID | None = None,
    client: PrefectClient | None = None,
) -> Any:
    """Create (a new version of) the pack's keyed artifact; returns it.

    Works inside a flow run (the version is linked to it, as to ``flow_run_id``) and outside
    one (the ``run`` command at the end), through the client: Prefect deprecates its artifact
    helpers outside a run. A worker passes its own ``client``: a new one costs ~15 ms of CPU
    (it loads the CA bundle).
    """
    from prefect.client.schemas.actions import ArtifactCreate
    from prefect.client.schemas.objects import Artifact
    from prefect.context import FlowRunContext

    from stablenew.orchestration._prefect import prefect_client

    if flow_run_id is None:
        ctx = FlowRunContext.get()
        flow_run_id = ctx.flow_run.id if ctx is not None and ctx.flow_run is not None else None
    server = running_server_url(home, output_root)
    artifact = ArtifactCreate(
        key=pack_artifact_key(pack_id),
        type="markdown",
        data=pack_artifact_markdown(
            pack_id, server_url=server, output_root=output_root, expected_jobs=expected_jobs
        ),
        description=f"Contact sheet and gallery of pack {pack_id}",
        flow_run_id=flow_run_id,
    )
    # Posted directly: the client's create_artifact also emits an event through Prefect's
    # background events worker, which a short-lived CLI process leaves behind at exit
    # ("Still processing items"); the artifact itself is the same.
    body = artifact.model_dump(mode="json", exclude_unset=True)
    if client is not None:
        return Artifact.model_validate(
            (await client.request("POST", "/artifacts/", json=body)).json()
        )
    async with prefect_client() as own:
        return Artifact.model_validate((await own.request("POST", "/artifacts/", json=body)).json())
