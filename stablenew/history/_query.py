"""SQL for reading ``jobs`` and ``runs``: filters to WHERE clauses, orders, keyset cursors,
row mapping."""

from __future__ import annotations

import sqlite3
from typing import Any

from stablenew.errors import HistoryError
from stablenew.history.models import (
    JobFilter,
    JobRow,
    Order,
    Rating,
    RunRow,
    Transition,
    from_us,
    to_us,
)

# Columns of a JobRow, in JobRow field order (cursor excepted); times are microseconds.
JOB_COLUMNS = (
    "job_id",
    "flow_run_id",
    "pack_id",
    "pack_title",
    "row_index",
    "combo_index",
    "variant_index",
    "batch_index",
    "prompt_head",
    "model",
    "sampler",
    "steps",
    "width",
    "height",
    "seed",
    "status",
    "status_at",
    "priority",
    "worker",
    "created_at",
    "queued_at",
    "started_at",
    "completed_at",
    "duration_s",
    "runs",
    "outputs",
    "error",
    "record_json",
)
TIME_COLUMNS = frozenset({"status_at", "created_at", "queued_at", "started_at", "completed_at"})
SELECT_JOBS = f"SELECT id, {', '.join(JOB_COLUMNS)} FROM jobs"

# Columns of a RunRow, in RunRow field order.
RUN_COLUMNS = (
    "flow_run_id",
    "job_id",
    "run_number",
    "status",
    "status_at",
    "priority",
    "worker",
    "created_at",
    "queued_at",
    "started_at",
    "completed_at",
    "duration_s",
    "outputs",
    "error",
    "attempts",
    "parent_flow_run_id",
    "parent_job_id",
    "reason",
)
SELECT_RUNS = f"SELECT {', '.join(RUN_COLUMNS)} FROM runs"
SELECT_RATINGS = "SELECT job_id, flow_run_id, stars, note, favourite, at FROM ratings"
SELECT_TRANSITIONS = (
    "SELECT id, job_id, flow_run_id, attempt, from_status, to_status, at, source, message, legal"
    " FROM transitions"
)

# Every filter index ends in created_at and implicitly in the rowid ``id``, so these orders
# are index walks: LIMIT stops early and keyset ``(created_at, id) < (?, ?)`` is a range seek.
ORDERS: dict[str, tuple[str, str]] = {
    "created_desc": ("ORDER BY created_at DESC, id DESC", "<"),
    "created_asc": ("ORDER BY created_at ASC, id ASC", ">"),
}


def where(flt: JobFilter) -> tuple[str, list[Any]]:
    """``(" WHERE ...", params)`` for the filter; ``("", [])`` when it has none."""
    clauses: list[str] = []
    params: list[Any] = []
    if flt.status:
        clauses.append(f"status IN ({', '.join('?' * len(flt.status))})")
        params.extend(s.value for s in flt.status)
    if flt.pack is not None:
        clauses.append("pack_id = ?")
        params.append(flt.pack)
    if flt.model is not None:
        clauses.append("model = ?")
        params.append(flt.model)
    if flt.since is not None:
        clauses.append("created_at >= ?")
        params.append(to_us(flt.since))
    if flt.until is not None:
        clauses.append("created_at < ?")
        params.append(to_us(flt.until))
    if flt.text:
        # The full positive prompt lives only in the record; LIKE is ASCII case-insensitive.
        clauses.append("json_extract(record_json, '$.prompt') LIKE ? ESCAPE '\\'")
        params.append(f"%{_escape_like(flt.text)}%")
    if flt.rated is not None:
        negate = "" if flt.rated else "NOT "
        clauses.append(f"job_id {negate}IN (SELECT job_id FROM ratings WHERE stars IS NOT NULL)")
    if flt.favourite is not None:
        negate = "" if flt.favourite else "NOT "
        clauses.append(f"job_id {negate}IN (SELECT job_id FROM ratings WHERE favourite = 1)")
    return (" WHERE " + " AND ".join(clauses) if clauses else ""), params


def _escape_like(text: str) -> str:
    return text.replace("\\", "\\\\").replace("%", "\\%").replace("_", "\\_")


def prefix_sql(prefix: str, limit: int) -> tuple[str, list[Any]]:
    """Job ids starting with ``prefix``, in id order: a range seek on the ``job_id`` index.

    ``job_id >= prefix AND job_id < prefix-with-its-last-character-incremented`` (SQLite
    compares TEXT bytewise and UTF-8 keeps code point order); ``LIKE`` would scan the table,
    since the default LIKE is case-insensitive and the index is not.
    """
    sql = "SELECT job_id FROM jobs WHERE job_id >= ?"
    params: list[Any] = [prefix]
    upper = _prefix_upper_bound(prefix)
    if upper is not None:
        sql += " AND job_id < ?"
        params.append(upper)
    return f"{sql} ORDER BY job_id LIMIT ?", [*params, limit]


def _prefix_upper_bound(prefix: str) -> str | None:
    """The least string greater than every string starting with ``prefix`` (None: none is)."""
    stem = prefix.rstrip(chr(0x10FFFF))
    if not stem:
        return None
    code = ord(stem[-1]) + 1
    if 0xD800 <= code <= 0xDFFF:  # surrogates cannot be stored; the next code point can
        code = 0xE000
    return stem[:-1] + chr(code)


def encode_cursor(created_us: int, row_id: int) -> str:
    return f"{created_us}:{row_id}"


def decode_cursor(cursor: str) -> tuple[int, int]:
    try:
        created, row_id = cursor.split(":")
        return int(created), int(row_id)
    except ValueError:
        raise HistoryError(f"not a history page cursor: {cursor!r}") from None


def page_sql(
    flt: JobFilter, order: Order, after: str | None, limit: int, offset: int
) -> tuple[str, list[Any]]:
    try:
        order_by, keyset_op = ORDERS[order]
    except KeyError:
        raise ValueError(f"unknown order {order!r}; expected one of {', '.join(ORDERS)}") from None
    sql, params = where(flt)
    if after is not None:
        sql += (" AND " if sql else " WHERE ") + f"(created_at, id) {keyset_op} (?, ?)"
        params.extend(decode_cursor(after))
    # Skip and limit on ids alone (an index-only walk), then fetch just the page's rows:
    # SQLite otherwise reads the table row of every skipped entry, doubling deep-offset cost.
    inner = f"SELECT id FROM jobs{sql} {order_by} LIMIT ? OFFSET ?"
    return f"{SELECT_JOBS} WHERE id IN ({inner}) {order_by}", [*params, limit, offset]


def job_row(row: sqlite3.Row) -> JobRow:
    values = {
        name: (from_us(row[name]) if name in TIME_COLUMNS and row[name] is not None else row[name])
        for name in JOB_COLUMNS
    }
    return JobRow(**values, cursor=encode_cursor(row["created_at"], row["id"]))


def run_row(row: sqlite3.Row) -> RunRow:
    return RunRow(
        **{
            name: (
                from_us(row[name]) if name in TIME_COLUMNS and row[name] is not None else row[name]
            )
            for name in RUN_COLUMNS
        }
    )


def rating(row: sqlite3.Row) -> Rating:
    return Rating(
        job_id=row["job_id"],
        flow_run_id=row["flow_run_id"],
        stars=row["stars"],
        note=row["note"],
        favourite=bool(row["favourite"]),
        at=from_us(row["at"]),
    )


def transition(row: sqlite3.Row) -> Transition:
    return Transition(
        id=row["id"],
        job_id=row["job_id"],
        flow_run_id=row["flow_run_id"],
        attempt=row["attempt"],
        from_status=row["from_status"],
        to_status=row["to_status"],
        at=from_us(row["at"]),
        source=row["source"],
        message=row["message"],
        legal=bool(row["legal"]),
    )
