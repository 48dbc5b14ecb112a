"""What the WebUI client returns: typed views over A1111 answers, and the stage runner's result."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from stablenew.errors import WebUIInterrupted


@dataclass(frozen=True, slots=True)
class GenerationResult:
    """A txt2img/img2img answer: decoded PNG bytes, the ``parameters`` echo and parsed ``info``."""

    images: tuple[bytes, ...]
    parameters: dict[str, Any]
    info: dict[str, Any]

    @property
    def infotexts(self) -> list[str]:
        """One infotext per image (``info.infotexts``), aligned with :attr:`images`."""
        return [str(t) for t in self.info.get("infotexts") or []]

    @property
    def seeds(self) -> list[int]:
        """The real seed of each image (``info.all_seeds``)."""
        return [int(s) for s in self.info.get("all_seeds") or []]


@dataclass(frozen=True, slots=True)
class UpscaleResult:
    """An extra-single-image answer."""

    image: bytes
    html_info: str


@dataclass(frozen=True, slots=True)
class ProgressSnapshot:
    """One ``GET /sdapi/v1/progress`` reading, flattened for progress bars."""

    step: int
    steps: int
    eta: float
    job_no: int
    job_count: int
    progress: float
    job: str
    interrupted: bool
    skipped: bool
    job_timestamp: str

    @property
    def busy(self) -> bool:
        """A1111 is busy whenever ``job_count`` is not 0 (it is -1 while a job starts up)."""
        return self.job_count != 0

    @classmethod
    def from_json(cls, data: dict[str, Any]) -> ProgressSnapshot:
        state = data.get("state") or {}
        return cls(
            step=int(state.get("sampling_step") or 0),
            steps=int(state.get("sampling_steps") or 0),
            eta=float(data.get("eta_relative") or 0.0),
            job_no=int(state.get("job_no") or 0),
            job_count=int(state.get("job_count") or 0),
            progress=float(data.get("progress") or 0.0),
            job=str(state.get("job") or ""),
            interrupted=bool(state.get("interrupted")),
            skipped=bool(state.get("skipped")),
            job_timestamp=str(state.get("job_timestamp") or ""),
        )


class InterruptedGeneration(WebUIInterrupted):
    """A generation answered 200 but was interrupted; ``result`` holds the partial images."""

    def __init__(self, message: str, *, result: GenerationResult, url: str) -> None:
        self.result = result
        super().__init__(message, url=url, status=200)


@dataclass(frozen=True, slots=True)
class StageResult:
    """One stage of a job as it ran: the parsed ``info`` (or extras ``html_info``) and timing."""

    index: int
    type: str
    started_at: float
    ended_at: float
    info: dict[str, Any] | list[str]

    @property
    def seconds(self) -> float:
        return self.ended_at - self.started_at


@dataclass(frozen=True, slots=True)
class ImageResult:
    """One final image of a job.

    ``infotext`` is the A1111 ``parameters`` text of the last generation stage (what the PNG
    carries); ``stage_seconds`` is aligned with the record's stages.
    """

    png: bytes
    seed: int
    infotext: str
    stage_seconds: tuple[float, ...]


@dataclass(frozen=True, slots=True)
class JobResult:
    """Everything :func:`stablenew.webui.run_stages` produced for one record."""

    job_id: str
    images: tuple[ImageResult, ...]
    stages: tuple[StageResult, ...] = field(default=())

    @property
    def seconds(self) -> float:
        return sum(s.seconds for s in self.stages)
