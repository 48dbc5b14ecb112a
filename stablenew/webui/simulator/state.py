"""Runtime state of one simulator: options, the loaded model, A1111's ``shared.state`` (what
``/progress`` reports), fault decisions, timing, and the statistics the control API exposes."""

from __future__ import annotations

import datetime
import random
import threading
import time
from dataclasses import asdict, dataclass
from importlib import resources
from typing import Any

import yaml

from stablenew.webui.simulator.config import FaultConfig, SimConfig, TimingConfig
from stablenew.webui.simulator.fifo import FIFOLock
from stablenew.webui.simulator.inventory import Checkpoint, Inventory


class OutOfMemoryError(RuntimeError):
    """Named like torch's, so the A1111 error wrapper reports ``"error": "OutOfMemoryError"``."""


@dataclass(frozen=True, slots=True)
class Faults:
    """What to inject into one processing request, decided when it arrives."""

    number: int
    fail: bool
    oom: bool
    hang: float
    drop: bool
    reject: bool = False


@dataclass(slots=True)
class Event:
    """One job that held the generation lock (``GET /stablenew-sim/v1/stats``)."""

    kind: str
    start: float
    end: float
    model: str
    steps: int
    interrupted: bool
    prompt: str
    images: int


def default_options(inventory: Inventory) -> dict[str, Any]:
    """A1111 1.10's full default option set, with the first checkpoint loaded."""
    text = resources.files("stablenew.webui.simulator").joinpath("a1111_options.yaml")
    options: dict[str, Any] = yaml.safe_load(text.read_text(encoding="utf-8"))
    model = inventory.models[0]
    options.update(sd_model_checkpoint=model.title, sd_checkpoint_hash=model.full_sha)
    return options


class SimState:
    """Shared by every request handler; ``mutex`` guards the fields, ``lock`` is the FIFO
    generation lock (held for whole jobs; ``/progress`` never takes it)."""

    def __init__(self, config: SimConfig, inventory: Inventory) -> None:
        self.config = config
        self.inventory = inventory
        self.lock = FIFOLock()
        self.mutex = threading.Lock()
        self.abort = threading.Event()  # cuts simulated work short: interrupt, skip, reset
        self.closing = False
        self.reset()

    def close(self) -> None:
        """Server shutdown: every simulated wait returns at once from now on."""
        self.closing = True
        self.abort.set()

    def reset(self) -> None:
        """Back to the configured start state; wakes any job sleeping in a hang or step."""
        with self.mutex:
            self.timing = self.config.timing.model_copy()
            self.faults = self.config.faults.model_copy(deep=True)
            self.rng = random.Random(self.config.seed)
            self.options = default_options(self.inventory)
            self.loaded: Checkpoint = self.inventory.models[0]
            self.events: list[Event] = []
            self.counters = dict.fromkeys(
                ("requests", "interrupts", "skips", "model_switches", "faults"), 0
            )
            self.job, self.job_count, self.job_no = "", 0, 0
            self.sampling_step, self.sampling_steps = 0, 0
            self.job_timestamp, self.time_start = "0", 0.0
            self.skipped = self.interrupted = False
            self.current_image: str | None = None
        self.abort.set()

    # -- A1111 shared.state ------------------------------------------------------------------

    def begin(self, job: str) -> None:
        with self.mutex:
            self.job, self.job_count, self.job_no = job, -1, 0
            self.sampling_step = 0
            self.job_timestamp = datetime.datetime.now().strftime("%Y%m%d%H%M%S")
            self.time_start = time.time()
            self.skipped = self.interrupted = False
            self.current_image = None
            if not self.closing:
                self.abort.clear()

    def end(self) -> None:
        with self.mutex:
            self.job, self.job_count, self.current_image = "", 0, None

    def interrupt(self) -> None:
        with self.mutex:
            self.interrupted = True
            self.counters["interrupts"] += 1
        self.abort.set()

    def skip(self) -> None:
        with self.mutex:
            self.skipped = True
            self.counters["skips"] += 1
        self.abort.set()

    def progress(self, skip_current_image: bool) -> dict[str, Any]:
        """``ProgressResponse`` as ``progressapi`` computes it."""
        with self.mutex:
            state = {
                "skipped": self.skipped,
                "interrupted": self.interrupted,
                "stopping_generation": False,
                "job": self.job,
                "job_count": self.job_count,
                "job_timestamp": self.job_timestamp,
                "job_no": self.job_no,
                "sampling_step": self.sampling_step,
                "sampling_steps": self.sampling_steps,
            }
            if self.job_count == 0:
                return {
                    "progress": 0.0,
                    "eta_relative": 0.0,
                    "state": state,
                    "current_image": None,
                    "textinfo": None,
                }
            progress = 0.01
            if self.job_count > 0:
                progress += self.job_no / self.job_count
                if self.sampling_steps > 0:
                    progress += self.sampling_step / self.sampling_steps / self.job_count
            progress = min(progress, 1.0)
            elapsed = time.time() - self.time_start
            image = None if skip_current_image else self.current_image
        return {
            "progress": progress,
            "eta_relative": elapsed / progress - elapsed,
            "state": state,
            "current_image": image,
            "textinfo": None,
        }

    def set_step(self, job_no: int, job_count: int, step: int, steps: int) -> None:
        with self.mutex:
            self.job_no, self.job_count = job_no, job_count
            self.sampling_step, self.sampling_steps = step, steps

    def set_preview(self, b64: str) -> None:
        with self.mutex:
            self.current_image = b64

    def flags(self) -> tuple[bool, bool]:
        """``(interrupted, skipped)``."""
        with self.mutex:
            return self.interrupted, self.skipped

    def clear_skip(self) -> None:
        with self.mutex:
            self.skipped = False
            if not self.interrupted:
                self.abort.clear()

    # -- model, faults, stats ----------------------------------------------------------------

    def load_model(self, checkpoint: Checkpoint) -> None:
        """Switch checkpoints (caller holds the generation lock); costs the switch delay."""
        with self.mutex:
            if checkpoint is self.loaded:
                return
            delay = self.timing.model_switch_seconds
            self.counters["model_switches"] += 1
        if delay:
            time.sleep(delay)
        with self.mutex:
            self.loaded = checkpoint
            self.options["sd_model_checkpoint"] = checkpoint.title
            self.options["sd_checkpoint_hash"] = checkpoint.full_sha

    def next_faults(self) -> Faults:
        """Count a processing request and decide which faults it gets."""
        with self.mutex:
            f: FaultConfig = self.faults
            n = self.counters["requests"] = self.counters["requests"] + 1
            fail = n in f.fail_nth or f.fail_next > 0
            if f.fail_next > 0:
                f.fail_next -= 1
            oom = not fail and f.oom_rate > 0 and self.rng.random() < f.oom_rate
            drop = f.drop_next > 0 or (f.drop_rate > 0 and self.rng.random() < f.drop_rate)
            if f.drop_next > 0:
                f.drop_next -= 1
            reject = f.reject_next > 0
            if reject:
                f.reject_next -= 1
            if fail or oom or drop or reject or f.hang_seconds:
                self.counters["faults"] += 1
            return Faults(n, fail, oom, f.hang_seconds, drop, reject)

    def random_seed(self) -> int:
        with self.mutex:
            return self.rng.randrange(4294967294)

    def record(self, event: Event) -> None:
        with self.mutex:
            self.events.append(event)

    def stats(self) -> dict[str, Any]:
        with self.mutex:
            return {
                "events": [asdict(e) for e in self.events],
                "counters": dict(self.counters),
                "queued": self.lock.waiting,
                "busy": self.job_count != 0,
                "loaded_model": self.loaded.title,
            }

    def update_faults(self, changes: dict[str, Any]) -> FaultConfig:
        """Merge ``changes`` into the fault config (validated; ``ValidationError`` if bad)."""
        with self.mutex:
            self.faults = FaultConfig.model_validate({**self.faults.model_dump(), **changes})
            return self.faults.model_copy(deep=True)

    def update_timing(self, changes: dict[str, Any]) -> TimingConfig:
        with self.mutex:
            self.timing = TimingConfig.model_validate({**self.timing.model_dump(), **changes})
            return self.timing.model_copy()
