"""What a render run shows in the Prefect UI, on a real server, worker and simulator: each
run's markdown artifact links its thumbnail and full PNG at the loopback file server (which
makes the thumbnail when asked), and the pack's keyed artifact links its contact sheet and
gallery. Then the sheet the ``run`` command rebuilds at the end has every cell."""

from __future__ import annotations

import asyncio
import re
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.filters import (
    ArtifactFilter,
    ArtifactFilterFlowRunId,
    ArtifactFilterKey,
)

from stablenew.builder import build_jobs
from stablenew.gallery import GalleryServer, refresh_pack, serving
from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services.artifacts import apublish_pack_artifact, pack_artifact_key
from stablenew.orchestration.services.jobs import JobService
from stablenew.packs import load_pack
from tests.gallery.conftest import pack_file
from tests.orchestration.conftest import LiveStack, wait_for

pytestmark = pytest.mark.slow

# An image on its own: Prefect's UI shows an image inside a link as text.
_IMAGE = re.compile(r"(?<!\[)!\[[^\]]*\]\((http://127\.0\.0\.1:\d+/[^)]+)\)")


@pytest.fixture
def gallery_server(live: LiveStack) -> Iterator[GalleryServer]:
    # As the embedded stack will: serve the worker's output root, announced in its data dir.
    with serving(live.output_root, live.stack.home) as server:
        yield server


async def _artifacts(**filters: Any) -> list[Any]:
    async with prefect_client() as client:
        return await client.read_artifacts(artifact_filter=ArtifactFilter(**filters))


def test_run_and_pack_artifacts_show_images(
    live: LiveStack, gallery_server: GalleryServer, tmp_path: Path
) -> None:
    pack_id = f"fox-art-{uuid.uuid4().hex[:6]}"  # a pack this worker has not published yet
    pack = load_pack(pack_file(tmp_path, pack=pack_id, grid={"x": "style", "y": "season"}))
    records = list(build_jobs(pack))
    service = JobService()
    runs = asyncio.run(service.asubmit_runs(records, "normal"))

    def done() -> bool:
        return all(service.status(r.job_id).status.is_terminal for r in records)

    wait_for(done, timeout=120, what="the pack's jobs")
    assert {service.status(r.job_id).status for r in records} == {JobStatus.COMPLETED}

    for run in runs:
        found = asyncio.run(_artifacts(flow_run_id=ArtifactFilterFlowRunId(any_=[run.id])))
        # The run's own artifact, plus the pack's keyed one where this run published it.
        [artifact] = [a for a in found if a.key is None]
        assert artifact.type == "markdown"
        assert {a.key for a in found} <= {None, pack_artifact_key(pack_id)}
        text = str(artifact.data)
        assert "stablenew explain " in text
        [thumb] = _IMAGE.findall(text)
        assert thumb.startswith(gallery_server.url)
        assert thumb.endswith("/000.thumb.jpg")
        got = httpx.get(thumb)  # made now, on first request: never on the worker
        assert got.status_code == 200
        assert got.headers["content-type"] == "image/jpeg"

    key = pack_artifact_key(pack_id)
    versions = asyncio.run(_artifacts(key=ArtifactFilterKey(any_=[key])))
    assert versions, "the worker published the pack's artifact"
    text = str(versions[0].data)
    sheet = next(u for u in _IMAGE.findall(text) if "/_grid/sheet" in u)
    assert f"/{pack_id}/index.html" in text
    assert httpx.get(sheet).headers["content-type"] == "image/png"

    # What `stablenew run` does at the end: final sheets and gallery, then the pack artifact.
    final = refresh_pack(live.output_root, pack_id, pack=pack, expected_jobs=len(records))
    assert final.sheets is not None
    assert final.sheets.complete
    asyncio.run(
        apublish_pack_artifact(
            pack_id, home=live.stack.home, output_root=live.output_root, expected_jobs=len(records)
        )
    )

    async def latest() -> Any:
        async with prefect_client() as client:
            [art] = await client.read_latest_artifacts(
                artifact_filter=ArtifactFilter(key=ArtifactFilterKey(any_=[key]))
            )
            return art

    art = asyncio.run(latest())
    assert f"{len(records)} of {len(records)} job(s)" in str(art.data)


def test_an_unreachable_api_costs_the_run_its_artifact_not_the_job(
    caplog: pytest.LogCaptureFixture,
) -> None:
    """The images are written when the artifact is created: a Prefect API down for longer
    than the client's retries must not turn a rendered job into a FAILED run."""
    from prefect.client.orchestration import PrefectClient

    from stablenew.orchestration.server.embedded import free_port
    from stablenew.orchestration.services.artifacts import apublish_run_artifacts
    from tests.orchestration.conftest import make_record

    async def publish() -> None:
        async with PrefectClient(api=f"http://127.0.0.1:{free_port()}/api") as client:
            await apublish_run_artifacts(make_record("unreachable"), [], run=(client, uuid.uuid4()))

    asyncio.run(publish())
    assert "artifact was not created: the Prefect API is unreachable" in caplog.text
