"""Bulk creation of flow runs for one submission: chunks through the server's bulk route,
re-submission keys (``job_id~N``), and finding runs whose creation answer was lost.

The embedded server has a faster bulk route of ours (``bulk_route``, same body and answer);
against any other Prefect server it answers 404 and Prefect's own route is used instead.
"""

from __future__ import annotations

import asyncio
import logging
import uuid
from collections.abc import Awaitable, Callable, Iterable, Mapping, Sequence
from dataclasses import asdict, dataclass
from datetime import datetime, timedelta
from typing import Any, TypeVar

import httpx
from prefect.client.orchestration import PrefectClient
from prefect.client.schemas.actions import DeploymentFlowRunCreate
from prefect.client.schemas.filters import (
    FlowRunFilter,
    FlowRunFilterIdempotencyKey,
)
from prefect.client.schemas.objects import FlowRun, StateType
from prefect.states import Scheduled, to_state_create
from pydantic import ValidationError

from stablenew.errors import (
    DuplicateJob,
    InvalidRecords,
    JobIdMismatch,
    RecordProblem,
    SubmissionError,
)
from stablenew.orchestration._prefect import PAGE, read_runs_by_id
from stablenew.records import NormalizedJobRecord, revalidate

logger = logging.getLogger(__name__)

T = TypeVar("T")

MAX_RESUBMITS = 20
BULK = 500  # runs per chunk (and per request where the server has our bulk route)
PREFECT_BULK = 100  # Prefect's own route's limit per request
FAST_ROUTE = "/stablenew/deployments/{id}/create_flow_run/bulk"
PREFECT_ROUTE = "/deployments/{id}/create_flow_run/bulk"
LOCKED_RETRIES = 10
# After an interrupted or failed request, how long the runs it may still create are looked
# for (a 500-run chunk commits within about a second here), and how often.
STRAY_WAIT_SECONDS = 3.0
STRAY_POLL_SECONDS = 0.25
RESUBMITTABLE = {StateType.FAILED, StateType.CRASHED, StateType.CANCELLED}


LINEAGE_KEY = "stablenew_lineage"  # in a flow run's context


@dataclass(frozen=True)
class Lineage:
    """Why a run exists and which run it repeats; kept in the flow run's context, where the
    history exporter reads it."""

    reason: str = "submit"  # submit | duplicate | rerun | recovery
    parent_flow_run_id: str | None = None
    parent_job_id: str | None = None  # a re-run with a new seed is a new job

    def context(self) -> dict[str, str]:
        return {k: v for k, v in asdict(self).items() if v is not None}

    @classmethod
    def of(cls, run: FlowRun) -> Lineage:
        raw = (run.context or {}).get(LINEAGE_KEY) or {}
        return cls(
            **{k: raw[k] for k in ("reason", "parent_flow_run_id", "parent_job_id") if k in raw}
        )


def run_tags(
    record: NormalizedJobRecord, priority: str, lineage: Lineage | None = None
) -> list[str]:
    tags = [
        "stablenew",
        f"pack:{record.pack_id}",
        f"priority:{priority}",
        f"model:{record.model}",
    ]
    if lineage is not None and lineage.reason != "submit":
        tags.append(lineage.reason)  # visible in the Prefect UI's run list
    return tags


def validate_records(
    records: Iterable[NormalizedJobRecord | dict[str, Any]],
) -> list[NormalizedJobRecord]:
    """Every record valid however it was made, each ``job_id`` the id its content gives, no
    job twice; else one :class:`InvalidRecords` listing every problem, before anything is
    created. Returns the records as validated (what the runs are created from)."""
    valid: list[NormalizedJobRecord] = []
    problems: list[RecordProblem] = []
    seen: set[str] = set()
    for i, item in enumerate(records):
        given = _given_id(item)
        try:
            rec = revalidate(item)
        except JobIdMismatch as e:
            problems.append(
                RecordProblem(
                    i, e.job_id, "job_id", f"expected {e.expected}, the id its content gives"
                )
            )
            continue
        except ValidationError as e:
            problems.extend(
                RecordProblem(
                    i,
                    given,
                    ".".join(str(p) for p in err["loc"]),
                    err["msg"].removeprefix("Value error, "),
                )
                for err in e.errors()
            )
            continue
        except (TypeError, ValueError) as e:
            problems.append(RecordProblem(i, given, "", f"a job record ({e})"))
            continue
        if rec.job_id in seen:
            problems.append(
                RecordProblem(i, rec.job_id, "job_id", "a job not already in this submission")
            )
        seen.add(rec.job_id)
        valid.append(rec)
    if problems:
        raise InvalidRecords(problems)
    return valid


def _given_id(item: object) -> str:
    raw = item.get("job_id") if isinstance(item, dict) else getattr(item, "job_id", "")
    return raw if isinstance(raw, str) else ""


async def _with_retry(call: Callable[[], Awaitable[T]], attempts: int = 6) -> T:
    """Retry on the SQLite server's 503/429 and on dropped connections, with backoff."""
    delay = 0.1
    for attempt in range(attempts):
        try:
            return await call()
        except httpx.HTTPStatusError as e:
            if e.response.status_code not in (429, 503) or attempt == attempts - 1:
                raise
        except (httpx.ConnectError, httpx.ReadError, httpx.RemoteProtocolError):
            if attempt == attempts - 1:
                raise
        await asyncio.sleep(delay)
        delay = min(delay * 2, 2.0)
    raise AssertionError("unreachable")  # pragma: no cover


class Batch:
    """One submission's creations: bulk chunks, re-submission keys, and finding strays."""

    def __init__(
        self,
        client: PrefectClient,
        deployment_id: uuid.UUID,
        priority: str,
        submission: str,
        base: datetime,
        order: Sequence[int],
        lineage: Mapping[str, Lineage] | None = None,
    ) -> None:
        self.client = client
        self.deployment_id = deployment_id
        self.priority = priority
        self.submission = submission
        self.base = base
        self.keys: dict[int, str] = {}
        self.fast: bool | None = None  # whether the server has our route; None: not asked yet
        self.lineage = dict(lineage or {})  # by job id; plain submissions have none
        # Input index -> position in the queue (see stablenew.ordering).
        self.slot = {i: pos for pos, i in enumerate(order)}

    def ours(self, run: FlowRun) -> bool:
        return bool(run.context.get("stablenew_submission") == self.submission)

    def _payload(
        self, i: int, rec: NormalizedJobRecord, key: str, lineage: Lineage | None = None
    ) -> dict[str, Any]:
        self.keys[i] = key
        lineage = lineage or self.lineage.get(rec.job_id) or Lineage()
        return DeploymentFlowRunCreate(
            name=rec.run_name,
            parameters={"record": rec.model_dump(mode="json")},
            context={"stablenew_submission": self.submission, LINEAGE_KEY: lineage.context()},
            # Workers take runs by expected start inside a queue: one microsecond apart
            # keeps the submission order exact.
            state=to_state_create(
                Scheduled(scheduled_time=self.base + timedelta(microseconds=self.slot[i]))
            ),
            tags=run_tags(rec, self.priority, lineage),
            idempotency_key=key,
            work_queue_name=self.priority,
        ).model_dump(mode="json", exclude_unset=True)

    async def _post(self, payloads: list[dict[str, Any]]) -> list[uuid.UUID]:
        if self.fast is not False:
            results = await self._post_to(FAST_ROUTE, payloads)
            if results is not None:
                self.fast = True
                return results
            self.fast = False
        ids: list[uuid.UUID] = []
        for start in range(0, len(payloads), PREFECT_BULK):
            results = await self._post_to(PREFECT_ROUTE, payloads[start : start + PREFECT_BULK])
            assert results is not None  # Prefect's own route is always there
            ids.extend(results)
        return ids

    async def _post_to(self, route: str, payloads: list[dict[str, Any]]) -> list[uuid.UUID] | None:
        """Create through ``route``; None if the server has no such route."""

        async def call() -> httpx.Response:
            try:
                response = await self.client.request(
                    "POST",
                    route,  # type: ignore[arg-type]
                    path_params={"id": self.deployment_id},
                    json=payloads,
                )
                response.raise_for_status()
            except httpx.HTTPStatusError as e:
                if e.response.status_code == 404 and route == FAST_ROUTE and self.fast is None:
                    return e.response
                raise
            return response

        delay = 0.05
        for _ in range(LOCKED_RETRIES):
            response = await _with_retry(call)
            if response.status_code == 404:
                return None
            results = response.json()["results"]
            failed = [str(r.get("error")) for r in results if r.get("status") != "CREATED"]
            # On SQLite a concurrent writer makes the server's transaction fail with
            # "database is locked"; the chunk is idempotent (keys), so send it again.
            if not failed or not all("database is locked" in f for f in failed):
                break
            await asyncio.sleep(delay)
            delay = min(delay * 2, 1.0)
        if failed:
            raise SubmissionError(f"the server refused {len(failed)} run(s): {failed[0][:300]}")
        return [uuid.UUID(r["flow_run_id"]) for r in results]

    async def _read(self, ids: Sequence[uuid.UUID]) -> list[FlowRun]:
        by_id = {r.id: r for r in await read_runs_by_id(self.client, ids)}
        return [by_id[i] for i in ids]

    async def create_chunk(self, chunk: Sequence[tuple[int, NormalizedJobRecord]]) -> list[FlowRun]:
        ids = await self._post([self._payload(i, rec, rec.job_id) for i, rec in chunk])
        # Read back: a duplicate key returns the existing run, recognisable by its context.
        return await self._read(ids)

    async def create_again(
        self, i: int, rec: NormalizedJobRecord, existing: FlowRun, allow_duplicates: bool
    ) -> FlowRun:
        """The job id is taken: use ``job_id~N`` if the earlier run may be repeated."""
        run = existing
        for n in range(1, MAX_RESUBMITS + 1):
            state = run.state.type if run.state else None
            if state not in RESUBMITTABLE and not allow_duplicates:
                state_name = run.state.name if run.state else "no state"
                raise DuplicateJob(rec.job_id, f"flow run {run.id}, {state_name}")
            # Asked for again on purpose: a run of the same job, after the one that holds
            # the key (unless the caller said why, e.g. a re-run).
            lineage = self.lineage.get(rec.job_id) or Lineage(
                "duplicate", parent_flow_run_id=str(run.id)
            )
            ids = await self._post([self._payload(i, rec, f"{rec.job_id}~{n}", lineage)])
            run = (await self._read(ids))[0]
            if self.ours(run):
                return run
        raise SubmissionError(f"job {rec.job_id} was re-submitted more than {MAX_RESUBMITS} times")

    async def find_late_strays(
        self, indexes: Sequence[int], seen: set[uuid.UUID], timeout: float = STRAY_WAIT_SECONDS
    ) -> list[FlowRun]:
        """Runs of ``indexes`` (a chunk whose request got no answer) that the server
        committed after :meth:`find_strays` looked: it goes on with a request whose caller
        was interrupted. A chunk is one transaction, so once any of its runs shows, all of
        it has; looked for every STRAY_POLL_SECONDS for at most ``timeout`` seconds."""
        keys = [self.keys[i] for i in indexes if i in self.keys]
        if not keys:
            return []
        deadline = asyncio.get_running_loop().time() + timeout
        while True:
            found = await self.find_strays({}, only=keys)
            if found and len(found) < len(keys):
                # The search reads a page at a time: the commit may have landed between two
                # pages (seen: 0, 0, then 100 of 500). All of it is there now.
                found = await self.find_strays({}, only=keys)
            if found:
                return [r for r in found if r.id not in seen]
            if asyncio.get_running_loop().time() >= deadline:
                return []
            await asyncio.sleep(STRAY_POLL_SECONDS)

    async def find_strays(
        self, created: dict[int, FlowRun], *, only: Sequence[str] | None = None
    ) -> list[FlowRun]:
        """Runs this submission made that we never heard back about (a request that failed
        after the server committed it); ``only``: of these idempotency keys."""
        missing = (
            list(only)
            if only is not None
            else [key for i, key in self.keys.items() if i not in created]
        )
        strays: list[FlowRun] = []
        for start in range(0, len(missing), PAGE):
            try:
                runs = await self.client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(
                        idempotency_key=FlowRunFilterIdempotencyKey(
                            any_=missing[start : start + PAGE]
                        )
                    ),
                    limit=PAGE,
                )
            except Exception:
                logger.exception("could not look for runs to roll back")
                continue
            strays.extend(r for r in runs if self.ours(r))
        return strays
