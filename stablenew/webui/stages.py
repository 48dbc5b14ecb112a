"""The stage runner: one record's chain txt2img → img2img → upscale against one WebUI."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable

from stablenew.errors import WebUIInterrupted
from stablenew.records import NormalizedJobRecord, StageSpec
from stablenew.webui.client import WebUIClient
from stablenew.webui.models import ImageResult, JobResult, StageResult
from stablenew.webui.payloads import (
    build_img2img_request,
    build_txt2img_request,
    build_upscale_request,
)

StageCallback = Callable[[int, StageSpec], None]


def run_stages(
    client: WebUIClient,
    record: NormalizedJobRecord,
    *,
    on_stage: StageCallback | None = None,
    cancel_event: threading.Event | None = None,
) -> JobResult:
    """Run every stage of ``record`` in order, each fed the previous stage's images.

    ``on_stage(index, stage)`` is called before each stage starts. When ``cancel_event`` is set
    (the caller then calls ``client.interrupt()``), the running stage's answer is discarded and
    :class:`WebUIInterrupted` is raised instead of starting the next stage.
    """
    images: list[bytes] = []
    seeds: list[int] = []
    infotexts: list[str] = []
    per_image: list[list[float]] = []
    stage_results: list[StageResult] = []
    for index, stage in enumerate(record.stages):
        _check_cancel(cancel_event, client, record, index, stage)
        if on_stage is not None:
            on_stage(index, stage)
        started = time.time()
        if stage.type == "upscale":
            images, infos, seconds = _upscale(client, record, stage, images)
            info: dict[str, object] | list[str] = infos
        else:
            if stage.type == "txt2img":
                result = client.txt2img(build_txt2img_request(record, stage))
            else:
                result = client.img2img(build_img2img_request(record, stage, images))
            images, seeds, infotexts = list(result.images), result.seeds, result.infotexts
            info = result.info
            seconds = [time.time() - started] * len(images)
        ended = time.time()
        _check_cancel(cancel_event, client, record, index, stage)
        per_image = [
            [*(per_image[i] if i < len(per_image) else []), seconds[i]] for i in range(len(images))
        ]
        stage_results.append(StageResult(index, stage.type, started, ended, info))
    return JobResult(
        job_id=record.job_id,
        images=tuple(
            ImageResult(
                png=png,
                seed=seeds[i] if i < len(seeds) else record.seed + i,
                infotext=infotexts[i] if i < len(infotexts) else "",
                stage_seconds=tuple(per_image[i]),
            )
            for i, png in enumerate(images)
        ),
        stages=tuple(stage_results),
    )


def _upscale(
    client: WebUIClient, record: NormalizedJobRecord, stage: StageSpec, images: list[bytes]
) -> tuple[list[bytes], list[str], list[float]]:
    out: list[bytes] = []
    infos: list[str] = []
    seconds: list[float] = []
    for png in images:
        started = time.time()
        result = client.extra_single_image(build_upscale_request(record, stage, png))
        seconds.append(time.time() - started)
        out.append(result.image)
        infos.append(result.html_info)
    return out, infos, seconds


def _check_cancel(
    cancel_event: threading.Event | None,
    client: WebUIClient,
    record: NormalizedJobRecord,
    index: int,
    stage: StageSpec,
) -> None:
    if cancel_event is not None and cancel_event.is_set():
        raise WebUIInterrupted(
            f"job {record.job_id} cancelled at stage {index} ({stage.type})",
            url=client.base_url,
        )
