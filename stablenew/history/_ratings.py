"""Ratings and favourites in the SQLite store: one row per job in ``ratings`` (migration 5).

Rating again replaces the stars (and the note, when one is given); a favourite need not be
rated. A job must be in the history to be rated; pruning a job removes its rating.
"""

from __future__ import annotations

import sqlite3
from collections.abc import Iterable
from datetime import datetime

from stablenew.errors import JobNotFound
from stablenew.history import _query
from stablenew.history._connection import Database, translate_errors
from stablenew.history.models import JobRow, Rating, to_us, utcnow

_IDS_PER_QUERY = 500


class RatingsMixin:
    """The ratings half of :class:`~stablenew.history.sqlite.SqliteHistoryStore`."""

    _db: Database

    def rate(
        self,
        job_id: str,
        stars: int,
        *,
        note: str | None = None,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> Rating:
        """Give the job 1..5 stars (and a note; without one, an earlier note stays); the run
        judged defaults to the job's latest. Returns the rating as stored."""
        if not 1 <= stars <= 5:
            raise ValueError(f"stars must be 1..5, got {stars}")
        return self._upsert(job_id, flow_run_id, at, stars=stars, note=note)

    def set_favourite(
        self,
        job_id: str,
        favourite: bool | None = None,
        *,
        flow_run_id: str | None = None,
        at: datetime | None = None,
    ) -> Rating:
        """Mark (True) or unmark (False) the job as a favourite; None toggles it."""
        return self._upsert(job_id, flow_run_id, at, favourite=favourite, toggle=favourite is None)

    def rating(self, job_id: str) -> Rating | None:
        """The job's rating, or None when it has none."""
        return self.ratings([job_id]).get(job_id)

    def ratings(self, job_ids: Iterable[str]) -> dict[str, Rating]:
        """Ratings of those of ``job_ids`` that have one, by job id."""
        ids = list(dict.fromkeys(job_ids))
        out: dict[str, Rating] = {}
        with translate_errors("ratings", self._db.path):
            conn = self._db.reader()
            for start in range(0, len(ids), _IDS_PER_QUERY):
                chunk = ids[start : start + _IDS_PER_QUERY]
                marks = ", ".join("?" * len(chunk))
                rows = conn.execute(
                    f"{_query.SELECT_RATINGS} WHERE job_id IN ({marks})", chunk
                ).fetchall()
                out.update((str(r["job_id"]), _query.rating(r)) for r in rows)
        return out

    def rated_jobs(self, pack: str) -> list[tuple[JobRow, Rating]]:
        """Every job of ``pack`` with a rating or a favourite mark, oldest first."""
        sql = (
            f"{_query.SELECT_JOBS} WHERE pack_id = ? AND job_id IN (SELECT job_id FROM ratings)"
            " ORDER BY created_at, id"
        )
        with translate_errors("rated jobs", self._db.path):
            rows = [_query.job_row(r) for r in self._db.reader().execute(sql, (pack,))]
        found = self.ratings(r.job_id for r in rows)
        return [(r, found[r.job_id]) for r in rows if r.job_id in found]

    def _upsert(
        self,
        job_id: str,
        flow_run_id: str | None,
        at: datetime | None,
        *,
        stars: int | None = None,
        note: str | None = None,
        favourite: bool | None = None,
        toggle: bool = False,
    ) -> Rating:
        when = to_us(at or utcnow())

        def write(conn: sqlite3.Connection) -> None:
            job = conn.execute(
                "SELECT flow_run_id FROM jobs WHERE job_id = ?", (job_id,)
            ).fetchone()
            if job is None:
                raise JobNotFound(job_id)
            fav = None if favourite is None else int(favourite)
            conn.execute(
                "INSERT INTO ratings (job_id, flow_run_id, stars, note, favourite, at)"
                " VALUES (?, ?, ?, ?, coalesce(?, ?), ?)"
                " ON CONFLICT(job_id) DO UPDATE SET"
                " flow_run_id = excluded.flow_run_id,"
                " stars = coalesce(?, stars), note = coalesce(?, note),"
                " favourite = CASE WHEN ? THEN 1 - favourite ELSE coalesce(?, favourite) END,"
                " at = excluded.at",
                (
                    job_id,
                    flow_run_id or job["flow_run_id"],
                    stars,
                    note,
                    fav,
                    int(toggle),  # a toggle of no rating yet makes a favourite
                    when,
                    stars,
                    note,
                    int(toggle),
                    fav,
                ),
            )

        self._db.write("rating", write)
        rating = self.rating(job_id)
        assert rating is not None
        return rating
