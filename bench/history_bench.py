"""History store at scale: prints figures, asserts nothing (not a test).

Run: ``.venv/bin/python bench/history_bench.py [--jobs 1000000] [--reruns 0.0] [--reuse]``

Fills a store under /tmp with synthetic jobs through the store's own bulk path
(``record_many``: submissions, then queued/running/terminal events, one transaction per batch),
each submission and event naming its flow run as the exporter's do, then times what the history
CLI and service do against it. Targets (issue 5, 1,000,000 jobs): a filtered page (status +
pack, limit 50, deep offset too) <= 20 ms median, ``count`` with a filter <= 100 ms, export of
all rows <= 15 s with flat memory; (issue 12) a read of one job (what ``history show`` and
``explain`` read: prefix resolution, the job, its runs, its transitions) <= 20 ms.

Data shape: pack ``p0`` holds 60% of the jobs (so status + pack matches > 500,000 rows and a
deep offset of 500,000 is real), nine more packs share the rest; four models; 85% completed,
8% failed, 4% cancelled, 3% still running; creation times one second apart. ``--reruns F``
gives a fraction F of the jobs a second run (a re-run an hour later that completes).
"""

from __future__ import annotations

import argparse
import io
import os
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from stablenew.history import SqliteHistoryStore, StatusEvent, Submission
from stablenew.lifecycle import JobStatus
from stablenew.records import NormalizedJobRecord

DB_DIR = Path("/tmp/stablenew-history-bench")
T0 = datetime(2024, 1, 1, tzinfo=UTC)
MODELS = ("v1-5-pruned-emaonly", "sdxl-base-1.0", "dreamshaper-8", "realvis-xl-4")
SUBJECTS = ("fox", "owl", "lighthouse", "robot", "castle", "forest", "city", "dragon")


def base_record() -> NormalizedJobRecord:
    return NormalizedJobRecord(
        pack_id="p0",
        pack_title="Bench pack",
        pack_hash="0123456789abcdef",
        row_index=0,
        prompt="a fox in watercolor style, golden hour, highly detailed, sharp focus",
        negative_prompt="blurry, lowres",
        prompt_template="a ${subject} in ${style} style, ${light}, {highly detailed|sharp focus}",
        loras=[{"name": "add_detail", "weight": 0.5}],
        matrix_slot_values={"subject": "fox", "style": "watercolor", "light": "golden hour"},
        seed=1,
        seed_policy="random",
        model=MODELS[0],
        sampler="DPM++ 2M",
        scheduler="Karras",
        steps=20,
        cfg_scale=7.0,
        width=512,
        height=512,
        stages=[
            {
                "type": "txt2img",
                "sampler": "DPM++ 2M",
                "steps": 20,
                "cfg_scale": 7.0,
                "width": 512,
                "height": 512,
            },
            {
                "type": "img2img",
                "sampler": "DPM++ 2M",
                "steps": 20,
                "cfg_scale": 7.0,
                "width": 512,
                "height": 512,
                "denoising_strength": 0.4,
            },
        ],
    )


def pack_of(i: int) -> str:
    return "p0" if i % 10 < 6 else f"p{1 + i % 9}"


def end_of(i: int) -> JobStatus:
    k = (i * 7919) % 100
    if k < 85:
        return JobStatus.COMPLETED
    if k < 93:
        return JobStatus.FAILED
    if k < 97:
        return JobStatus.CANCELLED
    return JobStatus.RUNNING


def job_id_of(i: int) -> str:
    return f"{pack_of(i)}-{i % 1000}-0-0-{i // 1000}-{i:010x}"


def flow_run_of(i: int, run: int = 1) -> str:
    return f"{i:08x}-{run:04x}-4000-8000-{i * 7919 % 2**48:012x}"


def reruns_of(i: int, fraction: float) -> bool:
    return (i * 104729) % 1000 < fraction * 1000


def submissions(n: int, reruns: float = 0.0) -> Iterator[Submission]:
    base = base_record()
    for i in range(n):
        subject = SUBJECTS[i % len(SUBJECTS)]
        pack = pack_of(i)
        rec = base.model_copy(
            update={
                "pack_id": pack,
                "row_index": i % 1000,
                "batch_index": i // 1000,
                "seed": i,
                "model": MODELS[i % 4],
                "prompt": f"a {subject} in watercolor style, golden hour, #{i}",
                "job_id": job_id_of(i),
            }
        )
        at = T0 + timedelta(seconds=i)
        yield Submission(record=rec, at=at, priority="normal", flow_run_id=flow_run_of(i))
        if reruns_of(i, reruns):
            yield Submission(
                record=rec,
                at=at + timedelta(hours=1),
                priority="normal",
                flow_run_id=flow_run_of(i, 2),
                reason="rerun",
                parent_flow_run_id=flow_run_of(i),
            )


def run_events(i: int, run: int, t: datetime, end: JobStatus) -> Iterator[StatusEvent]:
    job_id = job_id_of(i)
    common: dict[str, Any] = {"job_id": job_id, "flow_run_id": flow_run_of(i, run)}
    yield StatusEvent(status=JobStatus.QUEUED, at=t + timedelta(seconds=1), **common)
    yield StatusEvent(
        status=JobStatus.RUNNING, at=t + timedelta(seconds=2), worker=f"gpu-{i % 4}", **common
    )
    if end is not JobStatus.RUNNING:
        yield StatusEvent(
            status=end,
            at=t + timedelta(seconds=6),
            error="CUDA out of memory" if end is JobStatus.FAILED else None,
            outputs=(f"out/{job_id}.png",) if end is JobStatus.COMPLETED else None,
            **common,
        )


def events(n: int, reruns: float = 0.0) -> Iterator[StatusEvent]:
    for i in range(n):
        t = T0 + timedelta(seconds=i)
        yield from run_events(i, 1, t, end_of(i))
        if reruns_of(i, reruns):
            yield from run_events(i, 2, t + timedelta(hours=1), JobStatus.COMPLETED)


def fill(path: Path, n: int, reruns: float) -> None:
    with SqliteHistoryStore(path) as store:
        t = time.perf_counter()
        stats = store.record_many(submissions(n, reruns), batch_size=50_000)
        dt = time.perf_counter() - t
        print(
            f"insert {stats.jobs_added:,} jobs ({stats.runs_added:,} runs): {dt:.1f} s"
            f" = {stats.jobs_added / dt:,.0f} jobs/s"
        )
        t = time.perf_counter()
        stats = store.record_many(events=events(n, reruns), batch_size=50_000)
        dt = time.perf_counter() - t
        n_ev = stats.transitions_added
        print(f"apply {n_ev:,} status events: {dt:.1f} s = {n_ev / dt:,.0f} events/s")
    size = sum(f.stat().st_size for f in path.parent.iterdir())
    print(f"database size: {size / 2**20:,.0f} MiB")


def median_ms(fn: Callable[[], Any], runs: int = 31) -> float:
    fn()  # warm
    samples = []
    for _ in range(runs):
        t = time.perf_counter()
        fn()
        samples.append((time.perf_counter() - t) * 1000)
    return statistics.median(samples)


def rss_mib() -> float:
    with open("/proc/self/status") as fh:
        for line in fh:
            if line.startswith("VmRSS:"):
                return int(line.split()[1]) / 1024
    return float("nan")


def timed_export(store: SqliteHistoryStore, fmt: str, out: Path) -> None:
    peak = before = rss_mib()
    done = threading.Event()

    def sample() -> None:
        nonlocal peak
        while not done.wait(0.02):
            peak = max(peak, rss_mib())

    sampler = threading.Thread(target=sample, daemon=True)
    sampler.start()
    t = time.perf_counter()
    n = store.export(fmt, out)  # type: ignore[arg-type]
    dt = time.perf_counter() - t
    done.set()
    sampler.join()
    print(
        f"export all {n:,} rows to {fmt}: {dt:.1f} s ({out.stat().st_size / 2**20:,.0f} MiB); "
        f"RSS {before:,.0f} MiB before, peak {peak:,.0f} MiB (+{peak - before:,.1f} MiB)"
    )


def one_job(store: SqliteHistoryStore, n: int, reruns: float) -> None:
    """What ``history show`` / ``explain`` read for one job, from a unique prefix of its id."""
    i = n * 2 // 3
    job_id = job_id_of(i)
    prefix = job_id[:-3]

    def show() -> None:
        found = store.resolve_job_id(prefix)
        store.get_job(found)
        store.runs_of(found)
        store.transitions(found)

    print(f"get_job: {median_ms(lambda: store.get_job(job_id), 201):.3f} ms median")
    print(f"runs_of: {median_ms(lambda: store.runs_of(job_id), 201):.3f} ms median")
    print(f"transitions: {median_ms(lambda: store.transitions(job_id), 201):.3f} ms median")
    print(
        "read one job (resolve prefix + get_job + runs_of + transitions): "
        f"{median_ms(show, 201):.3f} ms median"
    )
    rerun = next((k for k in range(i, n) if reruns_of(k, reruns)), None) if reruns else None
    if rerun is not None:
        twice = job_id_of(rerun)
        assert store.get_job(twice).runs == 2

        def show_twice() -> None:
            store.get_job(twice)
            store.runs_of(twice)
            store.transitions(twice)

        print(f"read one job with 2 runs: {median_ms(show_twice, 201):.3f} ms median")
    print(f"open runs (for sync): {median_ms(store.open_flow_run_ids, 11):.2f} ms median")


def report(path: Path, n: int, reruns: float) -> None:
    with SqliteHistoryStore(path) as store:
        one_job(store, n, reruns)
        flt: dict[str, Any] = {"status": "completed", "pack": "p0"}
        matching = store.count(**flt)
        print(f"\nfilter status=completed pack=p0 matches {matching:,} of {store.count():,} jobs")
        deep = min(500_000, max(matching - 50, 0))
        conn = store._db.reader()
        plan = conn.execute(
            "EXPLAIN QUERY PLAN SELECT id FROM jobs WHERE status = 'completed' AND pack_id = 'p0'"
            " ORDER BY created_at DESC, id DESC LIMIT 50"
        ).fetchall()
        print("page plan:", "; ".join(str(r[-1]) for r in plan))
        print(f"page offset 0: {median_ms(lambda: store.list_jobs(limit=50, **flt)):.2f} ms median")
        print(
            f"page offset {deep:,}: "
            f"{median_ms(lambda: store.list_jobs(limit=50, offset=deep, **flt), 11):.2f} ms median"
        )
        cursor = store.list_jobs(limit=50, offset=deep - 50, **flt).next_cursor
        print(
            f"page keyset after row {deep:,}: "
            f"{median_ms(lambda: store.list_jobs(limit=50, after=cursor, **flt)):.2f} ms median"
        )
        print(f"count status+pack: {median_ms(lambda: store.count(**flt), 11):.2f} ms median")
        print(f"count status: {median_ms(lambda: store.count(status='failed'), 11):.2f} ms median")
        since = T0 + timedelta(seconds=n // 2)
        print(
            f"count model+since: "
            f"{median_ms(lambda: store.count(model=MODELS[1], since=since), 11):.2f} ms median"
        )
        print(f"count all: {median_ms(store.count, 11):.2f} ms median")
        print(
            f"text search (full prompt LIKE, a full scan): "
            f"{median_ms(lambda: store.count(text='#123456'), 3):.0f} ms median"
        )
        timed_export(store, "csv", DB_DIR / "export.csv")
        timed_export(store, "jsonl", DB_DIR / "export.jsonl")
        store.export("csv", io.StringIO(), pack="p5")  # filtered export works too


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=1_000_000)
    parser.add_argument(
        "--reruns", type=float, default=0.0, help="fraction of jobs run twice (0..1)"
    )
    parser.add_argument("--reuse", action="store_true", help="keep an existing bench database")
    args = parser.parse_args()
    print("$", ".venv/bin/python", *sys.argv)
    print(
        f"python {sys.version.split()[0]}, sqlite {__import__('sqlite3').sqlite_version}, "
        f"{os.cpu_count()} CPUs"
    )
    path = DB_DIR / "history.db"
    if not (args.reuse and path.exists()):
        shutil.rmtree(DB_DIR, ignore_errors=True)
        DB_DIR.mkdir(parents=True)
        fill(path, args.jobs, args.reruns)
    report(path, args.jobs, args.reruns)
    for name in ("export.csv", "export.jsonl"):
        (DB_DIR / name).unlink(missing_ok=True)


if __name__ == "__main__":
    main()
