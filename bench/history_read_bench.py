"""What a current read costs: ``JobHistoryService.get`` on a large history, from the store
alone and with its refresh from a live Prefect server (one request for the job's runs).

    python bench/history_read_bench.py --db /tmp/stablenew-history-bench/history.db

Uses the stack running for the data dir (``stablenew up``) or PREFECT_API_URL; prints figures,
asserts nothing (not a test).
"""

from __future__ import annotations

import argparse
import statistics
import time
from pathlib import Path

from stablenew.history import SqliteHistoryStore
from stablenew.orchestration.services.history_service import JobHistoryService


def timed(fn: object, n: int) -> list[float]:
    out: list[float] = []
    for _ in range(n):
        start = time.perf_counter()
        fn()  # type: ignore[operator]
        out.append((time.perf_counter() - start) * 1000)
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--db", type=Path, required=True, help="history database to read")
    parser.add_argument("--reads", type=int, default=200)
    args = parser.parse_args()
    with SqliteHistoryStore(args.db) as store:
        page = store.list_jobs(limit=args.reads, order="created_asc")
        ids = [j.job_id for j in page.items]
        jobs = store.count()
        service = JobHistoryService(store)
        service.get(ids[0])  # warm: locate Prefect once, open the client path
        for refresh in (False, True):
            it = iter(ids * 2)

            def read(it: object = it, refresh: bool = refresh) -> None:
                service.get(next(it), refresh=refresh)  # type: ignore[call-overload]

            ms = timed(read, args.reads)
            q = statistics.quantiles(ms, n=20)
            print(
                f"get(refresh={refresh}) over {jobs:,} jobs: median {statistics.median(ms):.2f} ms,"
                f" p95 {q[-1]:.2f} ms, max {max(ms):.2f} ms ({args.reads} reads)"
            )


if __name__ == "__main__":
    main()
