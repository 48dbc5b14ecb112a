"""History store under contention: two writer processes, threads, locked and read-only files."""

from __future__ import annotations

import multiprocessing
import sqlite3
import threading
from pathlib import Path

import pytest

from stablenew.errors import HistoryError
from stablenew.history import SqliteHistoryStore, open_store
from stablenew.lifecycle import JobStatus
from tests.core.history_support import at, make_record, write_jobs

N = 40


def test_two_writer_processes_both_land(tmp_path: Path) -> None:
    path = tmp_path / "h.db"  # not created yet: both processes also race to migrate it
    ctx = multiprocessing.get_context("spawn")
    procs = [ctx.Process(target=write_jobs, args=(str(path), tag, N)) for tag in ("aa", "bb")]
    for p in procs:
        p.start()
    for p in procs:
        p.join(timeout=60)
    for p in procs:
        if p.is_alive():
            p.kill()
    assert [p.exitcode for p in procs] == [0, 0]
    with open_store(path) as store:
        assert store.count(pack="aa") == N
        assert store.count(pack="bb") == N
        assert store.count(status="queued") == 2 * N
        first = store.list_jobs(pack="aa", order="created_asc", limit=1).items[0]
        assert [t.source for t in store.transitions(first.job_id)] == ["submit", "aa"]


def test_threads_share_one_store(tmp_path: Path) -> None:
    errors: list[BaseException] = []
    with open_store(tmp_path / "h.db") as store:

        def work(k: int) -> None:
            try:
                for i in range(20):
                    rec = make_record(pack_id=f"t{k}", row_index=i)
                    store.record_submission(rec, at=at(i))
                    store.record_transition(rec.job_id, JobStatus.QUEUED, at(i + 1))
                    store.count(pack=f"t{k}")
            except BaseException as e:
                errors.append(e)

        threads = [threading.Thread(target=work, args=(k,)) for k in range(4)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=30)
        assert errors == []
        assert store.count(status="queued") == 80


def test_locked_database_raises_history_error(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    open_store(path).close()
    blocker = sqlite3.connect(path, isolation_level=None)
    blocker.execute("BEGIN IMMEDIATE")
    store = SqliteHistoryStore(path, busy_timeout_s=0.05, write_retries=1)
    try:
        with pytest.raises(HistoryError, match="database is locked") as info:
            store.record_submission(make_record())
        assert isinstance(info.value.__cause__, sqlite3.OperationalError)
        assert store.count() == 0  # WAL: reads still work while a writer holds the lock
    finally:
        blocker.execute("ROLLBACK")
        blocker.close()
        store.close()


def test_read_only_store_refuses_writes(tmp_path: Path) -> None:
    path = tmp_path / "h.db"
    rec = make_record()
    with open_store(path) as rw:
        rw.record_submission(rec, at=at(0))
    with open_store(path, read_only=True) as ro:
        assert ro.get_job(rec.job_id).record() == rec
        with pytest.raises(HistoryError, match="readonly"):
            ro.record_transition(rec.job_id, JobStatus.QUEUED, at(1))


def test_unopenable_path_and_closed_store(tmp_path: Path) -> None:
    (tmp_path / "dir.db").mkdir()
    with pytest.raises(HistoryError, match="open"):
        open_store(tmp_path / "dir.db")
    store = open_store(tmp_path / "h.db")
    store.close()
    with pytest.raises(HistoryError, match="closed"):
        store.count()
