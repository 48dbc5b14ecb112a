"""Every pack in ``configs/packs/`` runs to completion on the bundled simulator.

Each pack is built and all its jobs are submitted to the real stack (Prefect server, worker,
simulator with its default inventory); every job must end COMPLETED. A new pack dropped into
``configs/packs/`` is covered without touching this file.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterator
from pathlib import Path

import pytest

from stablenew.builder import build_jobs
from stablenew.lifecycle import JobStatus
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.queue_view import JobRef
from stablenew.packs import load_pack
from tests.orchestration.conftest import LiveStack, wait_for

pytestmark = pytest.mark.slow

PACKS_DIR = Path(__file__).resolve().parents[2] / "configs" / "packs"
PACKS = sorted(PACKS_DIR.glob("*.yaml"))


def test_the_bundled_packs_are_found() -> None:
    assert len(PACKS) >= 3, f"no packs found in {PACKS_DIR}"


@pytest.fixture
def submitted_packs(live: LiveStack) -> Iterator[list[str]]:
    """Pack ids a test submitted; their leftovers are cancelled even if the test failed."""
    pack_ids: list[str] = []
    yield pack_ids
    service = JobService()
    for pack_id in pack_ids:
        service.cancel_pack(pack_id)


@pytest.mark.parametrize("pack_path", PACKS, ids=[p.stem for p in PACKS])
def test_bundled_pack_runs_to_completion_on_the_simulator(
    submitted_packs: list[str], pack_path: Path
) -> None:
    # generation_defaults={}: the pack as shipped, whatever a developer's settings file says.
    records = list(build_jobs(load_pack(pack_path), generation_defaults={}))
    assert records, f"{pack_path.name} builds no job"
    service = JobService()
    submitted_packs.append(records[0].pack_id)
    ids = service.submit(records, allow_duplicates=True)
    assert len(ids) == len(records)

    def finished() -> list[JobRef] | None:
        refs = [service.status(job_id) for job_id in ids]
        return refs if all(r.status.is_terminal for r in refs) else None

    refs: list[JobRef] = wait_for(
        finished, timeout=90, interval=1.0, what=f"the {len(ids)} jobs of {pack_path.name}"
    )
    failed = Counter(
        f"{r.state_name}: {r.message}" for r in refs if r.status != JobStatus.COMPLETED
    )
    assert not failed, f"{pack_path.name}: {failed.total()}/{len(ids)} jobs did not complete:\n" + (
        "\n".join(f"{n} x {message}" for message, n in failed.most_common())
    )
