"""Fault injection at scale: workers SIGKILLed and WebUIs restarted while a pack renders.

    python bench/faults.py [--jobs 200] [--workers 2] [--worker-kills 3] [--webui-restarts 2]
        [--seconds-per-image 0.2] [--webui-down 20] [--keep DIR] [--json]

Starts a throwaway Prefect server (SQLite), one simulator and one worker per GPU, submits the
pack, and while it renders alternates the faults: SIGKILL a worker (a replacement with a new
name starts at once, as a supervisor would restart it) and kill a simulator, bringing it back
on its port after --webui-down seconds. It reports, from Prefect's runs and the simulators'
own generation counts:

- completed: jobs with a COMPLETED run; lost: jobs without one when everything settled (or the
  deadline passed); duplicated: jobs with more than one COMPLETED run;
- wasted generations: generations beyond one per completed job (a generation the dead worker's
  WebUI finished for nobody, one interrupted by a restart);
- time to recover, per worker kill: from the kill until no run is held by the dead worker any
  more; per WebUI restart: from the WebUI being back until its next generation starts.

With --json the last line is one JSON object with those figures.
"""

from __future__ import annotations

import argparse
import contextlib
import contextvars
import json
import signal
import statistics
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.worker.recovery import claimant
from tests.orchestration.conftest import make_record
from tests.orchestration.faults import (
    FaultLab,
    Sim,
    completions_per_job,
    fault_lab,
    kill,
    runs_of,
    settled,
)

PACK = "bench-faults"


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--workers", type=int, default=2)
    parser.add_argument("--worker-kills", type=int, default=3)
    parser.add_argument("--webui-restarts", type=int, default=2)
    parser.add_argument("--seconds-per-image", type=float, default=0.2)
    parser.add_argument("--webui-down", type=float, default=20.0)
    parser.add_argument("--deadline", type=float, default=600.0, help="Give up after (s).")
    parser.add_argument(
        "--keep", type=Path, help="Run in this (new) folder and keep it: logs, database, images."
    )
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    # SIGTERM (e.g. `timeout`) unwinds like Ctrl-C: the lab stops what it started.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(143))
    if args.keep:
        args.keep.mkdir(parents=True)

    with (
        contextlib.nullcontext(str(args.keep))
        if args.keep
        else tempfile.TemporaryDirectory(prefix="stablenew-faults-") as tmp,
        fault_lab(Path(tmp)) as lab,
        temporary_settings(updates={PREFECT_API_URL: lab.api}),
    ):
        result = run(lab, args)
    for key, value in result.items():
        print(f"{key:>28}: {value}")
    if args.json:
        print(json.dumps(result))


def run(lab: FaultLab, args: argparse.Namespace) -> dict[str, Any]:
    spi = args.seconds_per_image
    sims = [lab.start_sim(spi) for _ in range(args.workers)]
    workers = {
        f"gpu-{i}-life-0": lab.start_worker(f"gpu-{i}-life-0", sims[i].url)
        for i in range(args.workers)
    }
    records = [make_record(f"fault bench job {i}", pack_id=PACK) for i in range(args.jobs)]
    started = time.monotonic()
    JobService().submit(records, "normal")

    # Generations counted by simulators since restarted (a generation cut by the restart
    # itself is not counted: the simulator died before it ended).
    generations: Counter[str] = Counter()
    faults = ["kill"] * args.worker_kills + ["restart"] * args.webui_restarts
    # Interleaved: kill, restart, kill, restart, kill ...
    kills = [f for f in faults if f == "kill"]
    restarts = [f for f in faults if f == "restart"]
    order: list[str] = []
    while kills or restarts:
        if kills:
            order.append(kills.pop())
        if restarts:
            order.append(restarts.pop())
    budget = args.jobs * spi / args.workers
    spacing = budget / (len(order) + 1)
    recover_kill: list[float] = []
    recover_webui: list[float] = []
    threads: list[threading.Thread] = []
    for n, fault in enumerate(order):
        time.sleep(spacing)
        gpu = n % args.workers
        if fault == "kill":
            name = next(w for w in workers if w.startswith(f"gpu-{gpu}-"))
            kill(workers.pop(name), signal.SIGKILL)
            killed_at = time.monotonic()
            life = int(name.rsplit("-", 1)[1]) + 1
            fresh = f"gpu-{gpu}-life-{life}"
            workers[fresh] = lab.start_worker(fresh, sims[gpu].url)
            t = threading.Thread(
                target=contextvars.copy_context().run,  # Prefect's settings are context-local
                args=(_time_release, name, killed_at, recover_kill),
                daemon=True,
            )
            t.start()
            threads.append(t)
        else:
            generations.update(sims[gpu].generations())
            sims[gpu] = lab.restart_sim(sims[gpu], args.webui_down, spi)
            back = time.monotonic()
            t = threading.Thread(
                target=_time_first_generation, args=(sims[gpu], back, recover_webui), daemon=True
            )
            t.start()
            threads.append(t)

    deadline = started + args.deadline
    while time.monotonic() < deadline and not settled(PACK, args.jobs):
        time.sleep(1.0)
    elapsed = time.monotonic() - started
    for t in threads:
        t.join(timeout=5)
    for sim in sims:
        generations.update(sim.generations())

    per_job = completions_per_job(PACK)
    completed = len(per_job)
    runs = runs_of(PACK)
    states = Counter(r.state.type.value if r.state else "NONE" for r in runs)
    return {
        "jobs": args.jobs,
        "workers": args.workers,
        "worker_kills": args.worker_kills,
        "webui_restarts": args.webui_restarts,
        "seconds_per_image": spi,
        "completed": completed,
        "lost": args.jobs - completed,
        "duplicated": sum(1 for n in per_job.values() if n > 1),
        "generations": sum(generations.values()),
        "wasted_generations": sum(generations.values()) - completed,
        "recover_worker_s": [round(x, 1) for x in recover_kill],
        "recover_worker_max_s": round(max(recover_kill), 1) if recover_kill else None,
        "recover_webui_s": [round(x, 1) for x in recover_webui],
        "recover_webui_max_s": round(max(recover_webui), 1) if recover_webui else None,
        "run_states": dict(states),
        "elapsed_s": round(elapsed, 1),
        "ideal_s": round(args.jobs * spi / args.workers, 1),
        "median_recover_worker_s": round(statistics.median(recover_kill), 1)
        if recover_kill
        else None,
    }


def _time_release(worker: str, since: float, out: list[float]) -> None:
    """Until nothing is held by ``worker`` (its claims recovered)."""
    deadline = since + 300
    while time.monotonic() < deadline:
        if not any(claimant(r) == worker for r in runs_of(PACK)):
            out.append(time.monotonic() - since)
            return
        time.sleep(0.5)


def _time_first_generation(sim: Sim, since: float, out: list[float]) -> None:
    """Until the restarted WebUI starts generating again."""
    deadline = since + 300
    while time.monotonic() < deadline:
        try:
            if sim.busy() or sim.generations():
                out.append(time.monotonic() - since)
                return
        except Exception:
            pass
        time.sleep(0.2)


if __name__ == "__main__":
    main()
