"""Prefect's floor: the server CPU per job of the least any worker must ask of it.

    python bench/floor.py [--jobs 200] [--json]

Starts a throwaway Prefect server (ours, on SQLite, as the embedded stack runs it) with the
project deployed and no worker, submits --jobs runs, and drives them one after another from
this process with plain API calls, nothing else, in steps that each add one request per job:

- ``states``: PENDING, RUNNING, COMPLETED (the least for a run the UI shows as run);
- ``claim``: + one ``get_scheduled_flow_runs`` ask per job (how a worker gets a run);
- ``artifact``: + one markdown artifact per job (the run's images in the UI);
- ``labels``: + the worker-label PATCH Prefect's workers write on every claimed run;
- ``ours``: the same run's life as our worker lives it on our server: the claim route (ask,
  PENDING and labels in one request), the start route (RUNNING), the artifact, COMPLETED.

Each step measures its own batch of runs; ``idle_ms_per_s`` is the server with nothing to do
(its services), which every job pays for the seconds it lasts. Set against
``bench/overhead.py``'s ``cpu_ms_per_job`` it tells what is Prefect's and what is ours.
With --json the last line is one JSON object.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from pathlib import Path
from typing import Any

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from prefect.client.schemas.actions import ArtifactCreate
from prefect.states import Completed, Pending, Running

from bench.overhead import bench_stack, cpu_seconds, records
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.server.embedded import Stack
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.worker.recovery import claim_message
from stablenew.orchestration.worker.scheduled_runs import CLAIM_ROUTE, START_ROUTE

STEPS = ("states", "claim", "artifact", "labels")
OURS = "ours"


async def drive(step: str, pool: str, ids: list[Any]) -> None:
    """Take each run through its life with only the requests ``step`` includes."""
    if step == OURS:
        await drive_ours(pool, len(ids))
        return
    steps = STEPS[: STEPS.index(step) + 1]
    async with prefect_client() as client:
        for run_id in ids:
            if "claim" in steps:
                response = await client.request(
                    "POST",
                    "/work_pools/{name}/get_scheduled_flow_runs",
                    path_params={"name": pool},
                    json={"limit": 1},
                )
                run_id = response.json()[0]["flow_run"]["id"]
            await client.set_flow_run_state(run_id, Pending())
            if "labels" in steps:
                await client.update_flow_run_labels(run_id, {"prefect.worker.name": "floor"})
            await client.set_flow_run_state(run_id, Running())
            if "artifact" in steps:
                await client.create_artifact(
                    ArtifactCreate(type="markdown", data="### job\n\n`out.png`", flow_run_id=run_id)
                )
            await client.set_flow_run_state(run_id, Completed())


async def drive_ours(pool: str, jobs: int) -> None:
    claim = claim_message("floor")
    labels = {"prefect.worker.name": "floor", "prefect.worker.type": "stablenew"}
    async with prefect_client() as client:
        for _ in range(jobs):
            response = await client.request(
                "POST",
                CLAIM_ROUTE,  # type: ignore[arg-type]
                path_params={"name": pool},
                json={"message": claim, "labels": labels, "limit": 1},
            )
            run_id = response.json()[0]["flow_run"]["id"]
            await client.request(
                "POST",
                START_ROUTE,  # type: ignore[arg-type]
                path_params={"id": run_id},
                json={"claim_message": claim},
            )
            await client.create_artifact(
                ArtifactCreate(type="markdown", data="### job\n\n`out.png`", flow_run_id=run_id)
            )
            await client.set_flow_run_state(run_id, Completed())


async def measure(args: argparse.Namespace, stack: Stack, pool: str) -> dict[str, Any]:
    server = stack.pids["prefect-server"]
    service = JobService(pool=pool)
    await service.aset_paused(True)  # nothing of the queue runs but what this process drives
    idle_from, t0 = cpu_seconds(server), time.perf_counter()
    await asyncio.sleep(args.idle_seconds)
    idle = (cpu_seconds(server) - idle_from) / (time.perf_counter() - t0) * 1000
    result: dict[str, Any] = {"jobs": args.jobs, "idle_ms_per_s": round(idle, 1)}
    for step in (*STEPS, OURS):
        runs = await service.asubmit_runs(records(args.jobs, step))
        if step != "states":
            await service.aset_paused(False)  # a paused pool hands out nothing
        cpu0, t1 = cpu_seconds(server), time.perf_counter()
        await drive(step, pool, [r.id for r in runs])
        seconds = time.perf_counter() - t1
        used = cpu_seconds(server) - cpu0 - idle / 1000 * seconds
        result[f"{step}_ms_per_job"] = round(used / args.jobs * 1000, 1)
        await service.aset_paused(True)
    return result


def main() -> None:
    parser = argparse.ArgumentParser(
        description=__doc__, formatter_class=argparse.RawTextHelpFormatter
    )
    parser.add_argument("--jobs", type=int, default=200)
    parser.add_argument("--idle-seconds", type=float, default=10.0)
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args()
    print(f"$ python bench/floor.py {' '.join(sys.argv[1:])}", flush=True)
    pool = "stablenew-floor"
    with bench_stack(pool, None, [], schedules=False) as stack:
        result = asyncio.run(measure(args, stack, pool))
    for key, value in result.items():
        print(f"{key:>20}: {value}")
    if args.json:
        print(json.dumps(result))


if __name__ == "__main__":
    main()
