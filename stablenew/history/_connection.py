"""How the history database is opened and written, in one place.

Every connection: WAL journal, ``synchronous=NORMAL`` (safe in WAL; a power cut may lose the
last commits, never consistency), ``busy_timeout``, foreign keys on, ``sqlite3.Row`` rows,
autocommit mode so transactions are explicit. Writes go through :class:`Database`, which holds a
``threading.Lock`` (one writer per process), opens ``BEGIN IMMEDIATE`` (so a writer waits for the
lock up front instead of deadlocking on upgrade) and retries the whole unit when another process
keeps the database busy beyond ``busy_timeout``.

``sqlite3`` errors are translated to :class:`HistoryError` here and nowhere else.
"""

from __future__ import annotations

import contextlib
import logging
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import TypeVar

from stablenew.errors import HistoryError
from stablenew.history import migrations

logger = logging.getLogger(__name__)

T = TypeVar("T")

_BUSY_MARKERS = ("database is locked", "database is busy", "database table is locked")


def is_busy(error: sqlite3.Error) -> bool:
    return isinstance(error, sqlite3.OperationalError) and any(
        marker in str(error) for marker in _BUSY_MARKERS
    )


@contextlib.contextmanager
def translate_errors(what: str, path: Path) -> Iterator[None]:
    """Turn any ``sqlite3.Error`` raised inside into ``HistoryError`` naming the action."""
    try:
        yield
    except sqlite3.Error as e:
        raise HistoryError(f"history {what} failed ({path}): {e}") from e


class Database:
    """Connections to one SQLite file: a locked writer plus one reader per thread."""

    def __init__(
        self,
        path: Path,
        *,
        busy_timeout_s: float = 5.0,
        write_retries: int = 5,
        read_only: bool = False,
    ) -> None:
        self.path = path
        self.read_only = read_only
        self._busy_ms = int(busy_timeout_s * 1000)
        self._write_retries = write_retries
        self._write_lock = threading.Lock()
        self._local = threading.local()
        self._all: list[sqlite3.Connection] = []
        self._all_lock = threading.Lock()
        self._closed = False
        try:
            with translate_errors("open", path):
                if not read_only:
                    path.parent.mkdir(parents=True, exist_ok=True)
                self._writer = self._connect()
                self._check_schema()
        except BaseException:
            self.close()
            raise

    def _check_schema(self) -> None:
        version = migrations.schema_version(self._writer)
        if version == migrations.LATEST_VERSION:
            return  # the common case: no write lock needed to open
        if not self.read_only:
            self._retry_busy(lambda: migrations.migrate(self._writer))
        else:
            raise HistoryError(
                f"history database {self.path} is at schema version {version}, expected "
                f"{migrations.LATEST_VERSION}, and was opened read-only"
            )

    def _connect(self) -> sqlite3.Connection:
        if self.read_only:
            conn = sqlite3.connect(
                f"{self.path.resolve().as_uri()}?mode=ro",
                uri=True,
                isolation_level=None,
                check_same_thread=False,
            )
        else:
            conn = sqlite3.connect(self.path, isolation_level=None, check_same_thread=False)
        conn.row_factory = sqlite3.Row
        conn.execute(f"PRAGMA busy_timeout = {self._busy_ms}")
        if not self.read_only:
            self._retry_busy(lambda: conn.execute("PRAGMA journal_mode = WAL"))
        conn.execute("PRAGMA synchronous = NORMAL")
        conn.execute("PRAGMA foreign_keys = ON")
        conn.execute("PRAGMA cache_size = -65536")  # 64 MiB page cache per connection
        conn.execute("PRAGMA temp_store = MEMORY")
        with self._all_lock:
            self._all.append(conn)
        return conn

    def _retry_busy(self, fn: Callable[[], T]) -> T:
        for attempt in range(self._write_retries + 1):
            try:
                return fn()
            except sqlite3.OperationalError as e:
                if not is_busy(e) or attempt == self._write_retries:
                    raise
                logger.debug("history database busy (%s); retry %d", e, attempt + 1)
                time.sleep(min(0.05 * 2**attempt, 1.0))
        raise AssertionError("unreachable")

    def reader(self) -> sqlite3.Connection:
        """This thread's read connection (WAL readers never block the writer or each other)."""
        if self._closed:
            raise HistoryError(f"history store {self.path} is closed")
        conn: sqlite3.Connection | None = getattr(self._local, "conn", None)
        if conn is None:
            with translate_errors("open", self.path):
                conn = self._connect()
            self._local.conn = conn
        return conn

    @contextlib.contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """``BEGIN IMMEDIATE`` under the process write lock; commits, or rolls back on error."""
        if self._closed:
            raise HistoryError(f"history store {self.path} is closed")
        with self._write_lock:
            conn = self._writer
            conn.execute("BEGIN IMMEDIATE")
            try:
                yield conn
            except BaseException:
                if conn.in_transaction:
                    conn.execute("ROLLBACK")
                raise
            conn.execute("COMMIT")

    def write(self, what: str, fn: Callable[[sqlite3.Connection], T]) -> T:
        """Run ``fn`` in one transaction; retried whole while the database stays busy."""

        def attempt() -> T:
            with self.transaction() as conn:
                return fn(conn)

        with translate_errors(what, self.path):
            return self._retry_busy(attempt)

    def close(self) -> None:
        if self._closed:
            return
        self._closed = True
        with self._write_lock, self._all_lock:
            writer = getattr(self, "_writer", None)
            if writer is not None and not self.read_only:
                with contextlib.suppress(sqlite3.Error):
                    writer.execute("PRAGMA optimize")
            for conn in self._all:
                with contextlib.suppress(sqlite3.Error):
                    conn.close()
            self._all.clear()
