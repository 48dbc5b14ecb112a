"""Streaming export of ``jobs`` to CSV or JSON Lines with flat memory.

One row per job: its status, times, duration, worker, outputs and error are those of its latest
run, and ``runs`` says how many runs it has had (``SqliteHistoryStore.runs_of`` lists them);
``stars``, ``favourite`` and ``rating_note`` are its rating (empty / 0 when it has none).

Rows are read through one cursor in ``fetchmany`` chunks and written straight out; SQLite
formats the timestamps (ISO 8601 UTC with microseconds, ``Z``) and, for JSON Lines, builds each
line, so Python only moves strings. Columns are those of :class:`JobRow` minus ``cursor``:
``outputs`` is a JSON list; ``record_json`` is the stored record verbatim (a CSV column; in JSON
Lines it is embedded unchanged as the object ``record``).
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterator
from typing import Any, TextIO

from stablenew.history._query import JOB_COLUMNS, TIME_COLUMNS
from stablenew.history.models import ExportFormat

EXPORT_CHUNK = 2000


def _iso(column: str) -> str:
    """ISO 8601 UTC with microseconds; NULL stays NULL (strftime of NULL is NULL)."""
    return (
        f"strftime('%Y-%m-%dT%H:%M:%S', {column} / 1000000, 'unixepoch')"
        f" || printf('.%06dZ', {column} % 1000000)"
    )


def _of_rating(column: str) -> str:
    return f"(SELECT {column} FROM ratings WHERE ratings.job_id = jobs.job_id)"


# The rating of each job, by correlated lookups (a primary key seek each), so the FROM and the
# filters stay those of ``jobs``. Placed before ``error``: see _SUMMARY.
_RATING = {
    "stars": _of_rating("stars"),
    "favourite": f"coalesce({_of_rating('favourite')}, 0)",
    "rating_note": _of_rating("note"),
}
EXPORT_COLUMNS = (*JOB_COLUMNS[:-2], *_RATING, *JOB_COLUMNS[-2:])


def _csv_expr(column: str) -> str:
    if column in _RATING:
        return _RATING[column]
    return _iso(column) if column in TIME_COLUMNS else column


def _json_value(column: str) -> str:
    if column == "outputs":
        return "json(outputs)"
    if column == "favourite":
        return f"json(iif({_RATING[column]}, 'true', 'false'))"
    return _csv_expr(column)


_NUMERIC = frozenset(
    {"row_index", "combo_index", "variant_index", "batch_index", "steps", "width", "height"}
    | {"seed", "duration_s", "runs", "stars", "favourite"}
)


def _csv_field(column: str) -> str:
    """One RFC 4180 field: numbers bare, text always quoted with quotes doubled, NULL empty."""
    expr = _csv_expr(column) if column in _RATING else column
    if column in _NUMERIC:
        return f"coalesce({expr}, '')"
    if column in TIME_COLUMNS:  # never needs quoting
        return f"coalesce({_iso(column)}, '')"
    return f"""iif({expr} IS NULL, '', '"' || replace({expr}, '"', '""') || '"')"""


# SQLite builds each CSV line itself, in one printf: Python only joins and writes strings.
_CSV_SELECT = (
    f"SELECT printf('{','.join(['%s'] * len(EXPORT_COLUMNS))}', "
    f"{', '.join(_csv_field(c) for c in EXPORT_COLUMNS)}) FROM jobs"
)

# json_object(...) without its closing brace (its last value, error, is a string or null,
# so rtrim takes exactly that brace), then the record appended verbatim.
_SUMMARY = (
    "json_object("
    + ", ".join(f"'{c}', {_json_value(c)}" for c in EXPORT_COLUMNS if c != "record_json")
    + ")"
)
assert JOB_COLUMNS[-2:] == ("error", "record_json")
_JSONL_SELECT = f"SELECT rtrim({_SUMMARY}, '}}') || ',\"record\":' || record_json || '}}' FROM jobs"


def _rows(conn: sqlite3.Connection, sql: str, params: list[Any], chunk: int) -> Iterator[list[Any]]:
    cursor = conn.cursor()
    cursor.row_factory = None  # plain tuples: no Row objects per exported row
    cursor.execute(sql, params)
    try:
        while rows := cursor.fetchmany(chunk):
            yield rows
    finally:
        cursor.close()


def write_export(
    conn: sqlite3.Connection,
    fmt: ExportFormat,
    out: TextIO,
    where_sql: str,
    params: list[Any],
    order_by: str,
    chunk: int | None = None,
) -> int:
    """Write the selected rows to ``out``; returns how many."""
    chunk = chunk or EXPORT_CHUNK
    n = 0
    if fmt == "csv":
        select = _CSV_SELECT
        out.write(",".join(EXPORT_COLUMNS) + "\n")
    elif fmt == "jsonl":
        select = _JSONL_SELECT
    else:
        raise ValueError(f"unknown export format {fmt!r}; expected csv or jsonl")
    for rows in _rows(conn, f"{select}{where_sql} {order_by}", params, chunk):
        out.write("\n".join([r[0] for r in rows]))
        out.write("\n")
        n += len(rows)
    return n
