"""History sync speed: N finished render-job runs on a real Prefect server → the history store.

    python bench/history_sync_bench.py --runs 10000

Starts a throwaway Prefect server (SQLite), creates N completed runs of render-job through the
bulk route (each with a full job record), then times a first sync into an empty store
(runs/s) and a second, incremental one (should add nothing).
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.states import Completed, to_state_create

from stablenew.history import SqliteHistoryStore
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.server.embedded import Stack
from stablenew.orchestration.services.deployments import (
    RENDER_DEPLOYMENT,
    RENDER_FLOW_NAME,
    apply,
    read_specs,
)
from stablenew.orchestration.services.exporter import SyncStats, sync
from stablenew.records import NormalizedJobRecord, StageSpec


def record(i: int) -> NormalizedJobRecord:
    stage = StageSpec(
        type="txt2img", sampler="Euler a", steps=20, cfg_scale=7, width=512, height=512
    )
    return NormalizedJobRecord(
        pack_id="syncbench", pack_hash="c" * 16, row_index=i, prompt=f"a fox, take {i}",
        seed=i, model="v1-5-pruned-emaonly", sampler="Euler a", steps=20, cfg_scale=7,
        width=512, height=512, stages=(stage,),
    )  # fmt: skip


async def fill(n: int) -> float:
    started = time.perf_counter()
    async with prefect_client() as client:
        deployment = await client.read_deployment_by_name(f"{RENDER_FLOW_NAME}/{RENDER_DEPLOYMENT}")
        for start in range(0, n, 100):
            body = [
                {
                    "name": rec.run_name,
                    "parameters": {"record": rec.model_dump(mode="json")},
                    "idempotency_key": rec.job_id,
                    "state": to_state_create(Completed()).model_dump(mode="json"),
                    "work_queue_name": "normal",
                }
                for rec in (record(i) for i in range(start, min(n, start + 100)))
            ]
            for _ in range(20):  # SQLite answers "database is locked" per item; keys dedupe
                response = await client.request(
                    "POST",
                    "/deployments/{id}/create_flow_run/bulk",  # type: ignore[arg-type]
                    path_params={"id": deployment.id},
                    json=body,
                )
                response.raise_for_status()
                if all(r["status"] == "CREATED" for r in response.json()["results"]):
                    break
                await asyncio.sleep(0.2)
            else:
                raise RuntimeError(f"could not create runs {start}..{start + len(body)}")
        created = await client.count_flow_runs()
    if created != n:
        raise RuntimeError(f"created {created} runs, wanted {n}")
    return time.perf_counter() - started


async def timed_sync(store: SqliteHistoryStore) -> tuple[float, SyncStats]:
    async with prefect_client() as client:
        started = time.perf_counter()
        stats = await sync(client, store)
        return time.perf_counter() - started, stats


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--runs", type=int, default=10_000)
    args = parser.parse_args()
    # Runs created directly in a final state skip QUEUED/RUNNING; the lifecycle check would
    # log each of them as an illegal move, which is right but not what this measures.
    logging.getLogger("stablenew.lifecycle").setLevel(logging.ERROR)
    print(f"$ python bench/history_sync_bench.py {' '.join(sys.argv[1:])}", flush=True)
    home = Path(tempfile.mkdtemp(prefix="stablenew-syncbench-"))
    stack = Stack(home=home)
    try:
        stack.start(prefect=True, simulator=False)
        assert stack.prefect_url
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}):

            async def deploy() -> None:
                async with prefect_client() as client:
                    await apply(client, specs=[s for s in read_specs() if s.name == "render-job"])

            asyncio.run(deploy())
            filled = asyncio.run(fill(args.runs))
            print(f"created {args.runs} completed runs in {filled:.1f}s", flush=True)
            with SqliteHistoryStore(home / "history.db") as store:
                first, stats1 = asyncio.run(timed_sync(store))
                second, stats2 = asyncio.run(timed_sync(store))
                total = store.count()
    finally:
        stack.stop()
    read = stats1.runs_read
    rate = read / first
    print(f"first sync : {first:.2f}s, {read} of {args.runs} runs = {rate:.0f} runs/s ({stats1})")
    print(f"second sync: {second:.2f}s ({stats2})")
    print(f"jobs in store: {total}; at {datetime.now(UTC).isoformat(timespec='seconds')}")


if __name__ == "__main__":
    main()
