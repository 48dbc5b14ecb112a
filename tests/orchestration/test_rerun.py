"""Re-running a job on the real stack: the same record as a new run of the same job, or a
derived record with a new seed (a new job, its own id), with lineage on the run; earlier runs
and their images are kept."""

from __future__ import annotations

import asyncio

from stablenew import JobService
from stablenew.lifecycle import JobStatus
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.services.submission import Lineage
from tests.orchestration.conftest import LiveStack, make_record, wait_for


def _done(service: JobService, job_id: str) -> JobStatus:
    return wait_for(  # type: ignore[no-any-return]
        lambda: (s := service.status(job_id).status).is_terminal and s,
        timeout=60,
        what=f"{job_id} to finish",
    )


async def _lineage(flow_run_id: str) -> Lineage:
    async with prefect_client() as client:
        return Lineage.of(await client.read_flow_run(flow_run_id))


def test_rerun_with_the_same_seed_is_a_new_run_of_the_same_job(live: LiveStack) -> None:
    service = JobService()
    rec = make_record("rerun me")
    service.submit([rec])
    assert _done(service, rec.job_id) is JobStatus.COMPLETED
    first = service.status(rec.job_id).flow_run_id

    run = asyncio.run(service.arerun(rec.job_id, priority="high"))
    assert run.idempotency_key == f"{rec.job_id}~1"
    assert run.work_queue_name == "high"
    assert _done(service, rec.job_id) is JobStatus.COMPLETED
    assert service.status(rec.job_id).flow_run_id == str(run.id) != first
    assert asyncio.run(_lineage(str(run.id))) == Lineage("rerun", parent_flow_run_id=first)
    assert "rerun" in run.tags


def test_rerun_with_a_new_seed_is_a_new_job_naming_its_parent(live: LiveStack) -> None:
    service = JobService()
    rec = make_record("reseed me")
    service.submit([rec])
    assert _done(service, rec.job_id) is JobStatus.COMPLETED
    parent_run = service.status(rec.job_id).flow_run_id

    new_id = service.rerun(rec.job_id, seed=424242)
    assert new_id != rec.job_id
    assert _done(service, new_id) is JobStatus.COMPLETED
    child = service.status(new_id)
    lineage = asyncio.run(_lineage(child.flow_run_id))
    assert lineage == Lineage("rerun", parent_flow_run_id=parent_run, parent_job_id=rec.job_id)

    async def seed_of(flow_run_id: str) -> int:
        async with prefect_client() as client:
            run = await client.read_flow_run(flow_run_id)
        return int(run.parameters["record"]["seed"])

    assert asyncio.run(seed_of(child.flow_run_id)) == 424242
    # The parent job is untouched: its latest run is still the one it had.
    assert service.status(rec.job_id).flow_run_id == parent_run


def test_a_duplicate_submission_names_the_run_it_repeats(live: LiveStack) -> None:
    service = JobService()
    rec = make_record("twice on purpose")
    service.submit([rec])
    assert _done(service, rec.job_id) is JobStatus.COMPLETED
    first = service.status(rec.job_id).flow_run_id
    service.submit([rec], allow_duplicates=True)
    second = service.status(rec.job_id).flow_run_id
    assert asyncio.run(_lineage(second)) == Lineage("duplicate", parent_flow_run_id=first)
    assert asyncio.run(_lineage(first)) == Lineage("submit")
