"""Bulk submission speed against the embedded Prefect server (SQLite), nothing else running.

    python bench/submission.py [--jobs 1000] [--repeat 1]

Starts a throwaway Prefect server, applies the deployments (without schedules), pauses the
GPU pool so nothing runs, and submits --jobs one-image jobs through JobService (validation,
bulk creation through the embedded server's route, 500 per request, read-back), --repeat
times into the same database. Prints the time, jobs/s and the server's CPU seconds for each
round, the 5xx answers the client got (and retried), and checks every run was created.
`bench/overhead.py` measures submission too, with a worker and the exporter alive.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

from overhead import counting_5xx, cpu_seconds, records
from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.server.embedded import Stack
from stablenew.orchestration.services.deployments import apply, read_specs
from stablenew.orchestration.services.jobs import JobService


async def rounds(args: argparse.Namespace, server_pid: int) -> list[dict[str, Any]]:
    async with prefect_client() as client:
        await apply(client, specs=[s.model_copy(update={"schedules": []}) for s in read_specs()])
    service = JobService()
    await service.aset_paused(True)
    out = []
    for n in range(args.repeat):
        batch = records(args.jobs, f"round {n}", pack_id=f"round-{n}")
        with counting_5xx() as server_errors:
            cpu0, t0 = cpu_seconds(server_pid), time.perf_counter()
            runs = await service.asubmit_runs(batch, "low")
            seconds = time.perf_counter() - t0
        async with prefect_client() as client:
            created = await client.count_flow_runs(
                flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=[f"pack:round-{n}"]))
            )
        out.append(
            {
                "round": n,
                "jobs": args.jobs,
                "runs_returned": len(runs),
                "runs_on_server": created,
                "seconds": round(seconds, 2),
                "jobs_per_s": round(args.jobs / seconds, 1),
                "server_cpu_s": round(cpu_seconds(server_pid) - cpu0, 2),
                "server_5xx": len(server_errors),
            }
        )
        print("  ".join(f"{k}={v}" for k, v in out[-1].items()), flush=True)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--jobs", type=int, default=1000)
    parser.add_argument("--repeat", type=int, default=1)
    args = parser.parse_args()
    print(f"$ python bench/submission.py {' '.join(sys.argv[1:])}", flush=True)
    stack = Stack(home=Path(tempfile.mkdtemp(prefix="stablenew-bench-")))
    try:
        stack.start(prefect=True, simulator=False)
        assert stack.prefect_url
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}):
            result = asyncio.run(rounds(args, stack.pids["prefect-server"]))
    finally:
        stack.stop()
    print(json.dumps(result))


if __name__ == "__main__":
    main()
