"""Checkpoint switches with and without grouping a mixed-model pack by checkpoint.

    python bench/model_switch.py [--jobs-per-model 10] [--models 3] [--switch-seconds 3]

Runs the same pack twice on one embedded stack (simulator at 0.5 s per image and the given
checkpoint-switch delay): once in pack order (jobs interleave the models, as a matrix over
models does), once grouped by checkpoint (what `stablenew run` / `submit` do by default).
Reports, per order, the simulator's own count of checkpoint switches and the makespan.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import time
from typing import Any

import httpx
from overhead import bench_stack, follow_until_terminal, records

from stablenew.orchestration.services.jobs import JobService
from stablenew.ordering import model_switches

MODELS = ["v1-5-pruned-emaonly", "dreamshaper_8", "sd_xl_base_1.0"]


async def one_order(
    service: JobService, sim: str, args: argparse.Namespace, grouped: bool
) -> dict[str, Any]:
    tag = "grouped" if grouped else "pack-order"
    models = MODELS[: args.models]
    pack = [
        records(1, f"{tag} {model} {i}", model=model, row_index=i * len(models) + m)[0]
        for i in range(args.jobs_per_model)
        for m, model in enumerate(models)
    ]
    async with httpx.AsyncClient(timeout=30) as http:
        # A reset loads the simulator's first checkpoint (the pack's first model) and its
        # configured timing; the switch delay is set after it.
        (await http.post(f"{sim}/reset")).raise_for_status()
        timing = {"model_switch_seconds": args.switch_seconds}
        (await http.post(f"{sim}/timing", json=timing)).raise_for_status()
        t0 = time.perf_counter()
        runs = await service.asubmit_runs(pack, group_models=grouped)
        await follow_until_terminal([r.id for r in runs])
        wall = time.perf_counter() - t0
        stats = (await http.get(f"{sim}/stats")).json()
    events = sorted(stats["events"], key=lambda e: e["start"])
    return {
        "order": tag,
        "jobs": len(pack),
        "switches_planned": model_switches(pack) if not grouped else args.models - 1,
        "switches_seen": stats["counters"]["model_switches"],
        "makespan_s": round(events[-1]["end"] - events[0]["start"], 2),
        "end_to_end_s": round(wall, 2),
    }


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs-per-model", type=int, default=10)
    parser.add_argument("--models", type=int, default=3, choices=range(2, len(MODELS) + 1))
    parser.add_argument("--switch-seconds", type=float, default=3.0)
    args = parser.parse_args()
    print(f"$ python bench/model_switch.py {' '.join(sys.argv[1:])}", flush=True)
    sim_args = ["--seconds-per-image", "0.5", "--seconds-per-step", "0"]
    with bench_stack("stablenew-gpu", "stablenew", sim_args, schedules=False) as stack:
        sim = f"{stack.webui_url}/stablenew-sim/v1"
        service = JobService()

        async def both() -> list[dict[str, Any]]:
            return [await one_order(service, sim, args, grouped) for grouped in (False, True)]

        results = asyncio.run(both())
    for row in results:
        print("  ".join(f"{k}={v}" for k, v in row.items()))
    print(json.dumps(results))


if __name__ == "__main__":
    main()
