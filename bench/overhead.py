"""Orchestration overhead: how long the (simulated) GPU idles between jobs.

    python bench/overhead.py --jobs 200 --seconds-per-image 0.5 [--worker stablenew|process]
        [--submit-jobs 1000] [--json] [--census]

Starts a throwaway embedded stack (Prefect server on SQLite, the WebUI simulator set to a fixed
S seconds per image, one worker), runs N one-image jobs, and reports from the simulator's own
timestamps (it knows when each generation starts and ends):

- makespan: first generation start to last generation end, and ratio = makespan / (N x S);
- the GPU-side gap: median/p95 time between one generation's end and the next one's start;
- end to end: from the submit call to every run terminal;
- submission: time to accept a --submit-jobs pack (pool paused, so nothing runs), jobs/s,
  and how many 5xx answers the submitting client got (and retried).

CPU per job is what each process of the stack used while the measured jobs ran (the server's
includes answering the pack's follower, which polls as `stablenew run` does). --census adds
the server's requests per route and job.

With --json the last line is one JSON object (makespan_s, ratio, median_gap_ms,
submit_rate_jobs_per_s, ...).
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import json
import os
import re
import statistics
import sys
import tempfile
import time
from collections import Counter
from collections.abc import Awaitable, Callable, Iterator
from contextlib import aclosing, contextmanager
from pathlib import Path
from typing import Any, TypeVar

import httpx
from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.server.embedded import Stack, client_env
from stablenew.orchestration.services.deployments import apply, read_specs
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.monitor import follow
from stablenew.records import NormalizedJobRecord, StageSpec

T = TypeVar("T")


def records(n: int, tag: str, **over: Any) -> list[NormalizedJobRecord]:
    stage = StageSpec(type="txt2img", sampler="Euler a", steps=1, cfg_scale=7, width=64, height=64)
    base = NormalizedJobRecord(
        pack_id="bench", pack_hash="b" * 16, row_index=0, prompt="x", seed=0,
        model="v1-5-pruned-emaonly", sampler="Euler a", steps=1, cfg_scale=7, width=64,
        height=64, stages=(stage,),
    )  # fmt: skip
    out = []
    for i in range(n):
        content = {**base.content_dict(), "prompt": f"{tag} job {i}", "row_index": i, **over}
        out.append(NormalizedJobRecord.model_validate(content))
    return out


async def poll(check: Callable[[], Awaitable[T | None]], timeout: float, what: str) -> T:
    """Await ``check`` every 20 ms until it returns something; bounded."""
    deadline = time.perf_counter() + timeout
    while time.perf_counter() < deadline:
        if (value := await check()) is not None:
            return value
        await asyncio.sleep(0.02)
    raise TimeoutError(f"no {what} after {timeout}s")


def cpu_seconds(pgid: int) -> float:
    """User+system CPU of every process in a process group (Linux /proc)."""
    tick = os.sysconf("SC_CLK_TCK")
    total = 0.0
    for entry in Path("/proc").iterdir():
        if not entry.name.isdigit():
            continue
        try:
            fields = (entry / "stat").read_text().rsplit(")", 1)[1].split()
        except OSError:
            continue
        if int(fields[2]) == pgid:  # field 5 of stat: process group
            total += (int(fields[11]) + int(fields[12])) / tick
    return total


def start_process_worker(stack: Stack, pool: str) -> None:
    """Prefect's stock process worker, for comparison (1 s polling, as measured before)."""
    assert stack.prefect_url
    assert stack.webui_url
    stack._spawn(
        "worker",
        [sys.executable, "-m", "prefect", "worker", "start", "--pool", pool, "--type", "process",
         "--limit", "1"],
        {
            **client_env(stack.prefect_url),
            "PREFECT_WORKER_QUERY_SECONDS": "1",
            "STABLENEW_WEBUI__URL": stack.webui_url,
            "STABLENEW_WORK_POOL": pool,
            "STABLENEW_HOME": str(stack.home),
        },
    )  # fmt: skip


async def priority_cancel_idle(
    args: argparse.Namespace, service: JobService, http: httpx.AsyncClient, sim: str
) -> dict[str, Any]:
    """Three latencies the GPU's user feels, measured on the same stack after the run:

    - priority: with a --backlog of `low` jobs flowing (the lookahead full of them), one
      `urgent` job is submitted; how many backlog jobs still start before it;
    - cancel: a running job (16 images, so it is mid-generation) is cancelled; time until
      the WebUI is interrupted and until the run is CANCELLED;
    - idle start: with the worker idle, one job is submitted; time to RUNNING and to the
      start of its generation.
    """

    async def sim_stats() -> dict[str, Any]:
        return (await http.get(f"{sim}/stats")).json()  # type: ignore[no-any-return]

    async def generation_of(prompt: str) -> dict[str, Any] | None:
        return next((e for e in (await sim_stats())["events"] if e["prompt"] == prompt), None)

    out: dict[str, Any] = {}
    (await http.post(f"{sim}/reset")).raise_for_status()
    backlog = await service.asubmit_runs(records(args.backlog, "backlog", pack_id="backlog"), "low")

    async def three_done() -> bool | None:
        return True if len((await sim_stats())["events"]) >= 3 else None

    await poll(three_done, 120, "backlog generations")
    t_urgent = time.time()
    await service.asubmit_runs(records(1, "urgent", pack_id="urgent"), "urgent")
    t_created = time.time()  # the submit call has returned: the run exists
    urgent = await poll(lambda: generation_of("urgent job 0"), 120, "urgent generation")
    backlog_starts = [
        e["start"] for e in (await sim_stats())["events"] if e["prompt"].startswith("backlog")
    ]
    out["urgent_submit_call_s"] = round(t_created - t_urgent, 3)
    out["urgent_submit_to_start_s"] = round(urgent["start"] - t_urgent, 3)
    out["backlog_jobs_started_before_urgent"] = sum(
        t_urgent < t < urgent["start"] for t in backlog_starts
    )
    out["backlog_jobs_started_after_urgent_existed"] = sum(
        t_created < t < urgent["start"] for t in backlog_starts
    )
    await service.acancel_pack("backlog")
    await follow_until_terminal([r.id for r in backlog])

    (await http.post(f"{sim}/reset")).raise_for_status()
    long_job = (await service.asubmit_runs(records(1, "long", pack_id="long", batch_size=16)))[0]

    async def generating() -> bool | None:
        async with prefect_client() as client:
            run = await client.read_flow_run(long_job.id)
        running = run.state is not None and run.state.type.value == "RUNNING"
        return True if running and (await sim_stats())["busy"] else None

    await poll(generating, 60, "the long job generating")
    t_cancel = time.perf_counter()
    await service.acancel(str(long_job.idempotency_key).split("~")[0])

    async def interrupted() -> bool | None:
        return True if (await sim_stats())["counters"]["interrupts"] else None

    try:
        await poll(interrupted, 30, "the WebUI interrupt")
        out["cancel_to_interrupt_s"] = round(time.perf_counter() - t_cancel, 3)
    except TimeoutError:  # Prefect's process worker does not interrupt the WebUI
        out["cancel_to_interrupt_s"] = None
    await follow_until_terminal([long_job.id])
    out["cancel_to_cancelled_s"] = round(time.perf_counter() - t_cancel, 3)

    await asyncio.sleep(2)  # let the worker go idle
    t_idle = time.time()
    idle_run = (await service.asubmit_runs(records(1, "idle", pack_id="idle")))[0]

    async def running() -> bool | None:
        async with prefect_client() as client:
            run = await client.read_flow_run(idle_run.id)
        return True if run.state and run.state.type.value in ("RUNNING", "COMPLETED") else None

    await poll(running, 60, "the idle-start job RUNNING")
    out["idle_submit_to_running_s"] = round(time.time() - t_idle, 3)
    generation = await poll(lambda: generation_of("idle job 0"), 60, "idle-start generation")
    out["idle_submit_to_generation_s"] = round(generation["start"] - t_idle, 3)
    await follow_until_terminal([idle_run.id])
    return out


async def follow_until_terminal(ids: list[Any]) -> None:
    async for _ in follow(ids, timeout=600):
        pass


async def measure(args: argparse.Namespace, stack: Stack, pool: str) -> dict[str, Any]:
    assert stack.webui_url
    service = JobService(pool=pool)
    sim = f"{stack.webui_url}/stablenew-sim/v1"
    async with httpx.AsyncClient(timeout=30) as http:
        # Warm up: first run loads the flow / starts the engine; not what we measure.
        warm = await service.asubmit_runs(records(2, "warm-up"))
        async for _ in follow([r.id for r in warm], timeout=300):
            pass
        (await http.post(f"{sim}/reset")).raise_for_status()

        server_log = stack.logs / "prefect-server.log"
        log_from = server_log.stat().st_size
        cpu0 = {name: cpu_seconds(pid) for name, pid in stack.pids.items()}
        t0 = time.perf_counter()
        runs = await service.asubmit_runs(records(args.jobs, "measured"))
        submitted = time.perf_counter() - t0
        ids = [r.id for r in runs]
        first_running: float | None = None
        # Watched closely until the first run starts (to time it), then as `stablenew run`
        # watches a pack: the monitor's polls are server CPU counted in the figure.
        async with aclosing(follow(ids, interval=0.1, timeout=args.timeout)) as closely:
            async for snapshot in closely:
                if any(ref.status.value != "queued" for ref in snapshot.values()):
                    first_running = time.perf_counter() - t0
                    break
        async for latest in follow(ids, timeout=args.timeout):
            snapshot = latest
        e2e = time.perf_counter() - t0
        cpu = {
            name: round((cpu_seconds(pid) - cpu0[name]) / args.jobs * 1000, 1)
            for name, pid in stack.pids.items()
        }
        census = requests_per_job(server_log, log_from, args.jobs) if args.census else None
        statuses = [ref.status.value for ref in snapshot.values()]
        events = sorted((await http.get(f"{sim}/stats")).json()["events"], key=lambda e: e["start"])

        extra = await priority_cancel_idle(args, service, http, sim) if args.latencies else {}

        await service.aset_paused(True)
        with counting_5xx() as server_errors:
            t1 = time.perf_counter()
            await service.asubmit_runs(records(args.submit_jobs, "submission"), "low")
            submit_seconds = time.perf_counter() - t1

    gaps = [b["start"] - a["end"] for a, b in itertools.pairwise(events)]
    makespan = events[-1]["end"] - events[0]["start"] if events else float("nan")
    ideal = args.jobs * args.seconds_per_image
    return {
        "worker": args.worker,
        "jobs": args.jobs,
        "seconds_per_image": args.seconds_per_image,
        "completed": statuses.count("completed"),
        "generations_seen": len(events),
        "makespan_s": round(makespan, 3),
        "ratio": round(makespan / ideal, 4),
        "median_gap_ms": round(statistics.median(gaps) * 1000, 1) if gaps else None,
        "p95_gap_ms": round(sorted(gaps)[int(0.95 * (len(gaps) - 1))] * 1000, 1) if gaps else None,
        "max_gap_ms": round(max(gaps) * 1000, 1) if gaps else None,
        # Where the idle time went: gaps over 1 s as (seconds into the run, length in s).
        "gaps_over_1s": [
            (round(a["end"] - events[0]["start"], 1), round(b["start"] - a["end"], 2))
            for a, b in itertools.pairwise(events)
            if b["start"] - a["end"] > 1
        ],
        "end_to_end_s": round(e2e, 3),
        "cpu_ms_per_job": cpu,
        **({"requests_per_job": census} if census is not None else {}),
        "first_running_s": round(first_running, 3) if first_running is not None else None,
        **extra,
        "submit_s_measured_jobs": round(submitted, 3),
        "submit_jobs": args.submit_jobs,
        "submit_s": round(submit_seconds, 3),
        "submit_rate_jobs_per_s": round(args.submit_jobs / submit_seconds, 1),
        "submit_5xx_answers": len(server_errors),
    }


_ACCESS = re.compile(r'"(GET|POST|PATCH|PUT|DELETE) (/api/[^ ?"]*)[^"]*" (\d{3})')
_ID = re.compile(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}")
_NAMED = re.compile(r"/(variables/name|work_pools|work_queues)/[^/]+")


def requests_per_job(server_log: Path, offset: int, jobs: int) -> dict[str, float]:
    """The server's requests (from its access log, written with --census) per route and
    status since ``offset``, per job, most frequent first."""
    with server_log.open("rb") as f:
        f.seek(offset)
        text = f.read().decode(errors="replace")
    counts: Counter[str] = Counter()
    for method, path, status in _ACCESS.findall(text):
        path = _NAMED.sub(lambda m: f"/{m.group(1)}/{{name}}", _ID.sub("{id}", path))
        counts[f"{method} {path} {status}"] += 1
    return {route: round(n / jobs, 2) for route, n in counts.most_common()}


@contextmanager
def counting_5xx() -> Iterator[list[int]]:
    """The 5xx answers this process's HTTP clients get (Prefect's client retries 503s
    without a word, so the submission time alone would not show them)."""
    seen: list[int] = []
    original = httpx.AsyncClient.send

    async def send(self: httpx.AsyncClient, request: httpx.Request, **kwargs: Any) -> Any:
        response = await original(self, request, **kwargs)
        if response.status_code >= 500:
            seen.append(response.status_code)
        return response

    httpx.AsyncClient.send = send  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        httpx.AsyncClient.send = original  # type: ignore[method-assign]


@contextmanager
def bench_stack(
    pool: str,
    worker: str | None,
    sim_args: list[str],
    *,
    schedules: bool = True,
    census: bool = False,
) -> Iterator[Stack]:
    """A throwaway embedded stack (server, simulator, one worker of the given kind; neither
    of the last two with ``worker=None``), with Prefect settings pointed at it; stopped on
    exit."""
    stack = Stack(home=Path(tempfile.mkdtemp(prefix="stablenew-bench-")))
    os.environ["STABLENEW_WORK_POOL"] = pool
    try:
        # At INFO the server's access log names every request (for --census; it costs CPU).
        server_env = {"PREFECT_SERVER_LOGGING_LEVEL": "INFO"} if census else None
        stack.start(
            prefect=True, simulator=worker is not None, sim_args=sim_args, server_env=server_env
        )
        assert stack.prefect_url
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}):

            async def deploy() -> None:
                specs = read_specs()
                if not schedules:
                    specs = [spec.model_copy(update={"schedules": []}) for spec in specs]
                async with prefect_client() as client:
                    await apply(
                        client, specs=specs, gpu_pool=pool, gpu_pool_type=worker or "stablenew"
                    )

            asyncio.run(deploy())
            if worker is None:
                pass
            elif worker == "stablenew":
                stack.start_worker(extra_env={"STABLENEW_WORK_POOL": pool})
            else:
                start_process_worker(stack, pool)
            yield stack
    finally:
        stack.stop()


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=50)
    parser.add_argument("--seconds-per-image", type=float, default=0.5)
    parser.add_argument("--worker", choices=("stablenew", "process"), default="stablenew")
    parser.add_argument("--submit-jobs", type=int, default=1000)
    parser.add_argument("--backlog", type=int, default=200, help="low jobs for the priority test")
    parser.add_argument(
        "--no-latencies",
        dest="latencies",
        action="store_false",
        help="skip the priority-jump, cancel and idle-start measurements",
    )
    parser.add_argument("--timeout", type=float, default=3600)
    parser.add_argument("--json", action="store_true")
    parser.add_argument(
        "--census",
        action="store_true",
        help="count the server's requests per route and job (its access log; CPU figures rise)",
    )
    parser.add_argument(
        "--no-schedules",
        action="store_true",
        help="apply prefect.yaml without its schedules (no export-history run every minute)",
    )
    args = parser.parse_args()
    print(f"$ python bench/overhead.py {' '.join(sys.argv[1:])}", flush=True)

    pool = "stablenew-gpu" if args.worker == "stablenew" else "stablenew-gpu-process"
    sim_args = ["--seconds-per-image", str(args.seconds_per_image), "--seconds-per-step", "0"]
    with bench_stack(
        pool, args.worker, sim_args, schedules=not args.no_schedules, census=args.census
    ) as stack:
        result = asyncio.run(measure(args, stack, pool))

    for key, value in result.items():
        print(f"{key:>24}: {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
