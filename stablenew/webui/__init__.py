"""The WebUI layer: the AUTOMATIC1111 API client, the stage runner and (in ``.simulator``) a
faithful A1111-compatible simulator. Imports HTTP and images, never Prefect or the CLI.
"""

from stablenew.webui.client import WebUIClient
from stablenew.webui.models import (
    GenerationResult,
    ImageResult,
    InterruptedGeneration,
    JobResult,
    ProgressSnapshot,
    StageResult,
    UpscaleResult,
)
from stablenew.webui.payloads import (
    build_img2img_request,
    build_txt2img_request,
    build_upscale_request,
    describe_requests,
)
from stablenew.webui.progress import poll_progress
from stablenew.webui.stages import run_stages

__all__ = [
    "GenerationResult",
    "ImageResult",
    "InterruptedGeneration",
    "JobResult",
    "ProgressSnapshot",
    "StageResult",
    "UpscaleResult",
    "WebUIClient",
    "build_img2img_request",
    "build_txt2img_request",
    "build_upscale_request",
    "describe_requests",
    "poll_progress",
    "run_stages",
]
