"""prefect.yaml: every deployment's entrypoint imports and names a flow; the objects the
product relies on are declared."""

from __future__ import annotations

from prefect.flows import Flow, load_flow_from_entrypoint

from stablenew.orchestration.services.deployments import project_root, read_specs


def test_every_entrypoint_loads_a_flow() -> None:
    specs = read_specs()
    assert {s.name for s in specs} >= {"render-job", "submit-pack", "export-history"}
    for spec in specs:
        flow = load_flow_from_entrypoint(str(project_root() / spec.entrypoint))
        assert isinstance(flow, Flow), spec.entrypoint


def test_gpu_and_schedules_are_declared() -> None:
    specs = {s.name: s for s in read_specs()}
    assert specs["render-job"].work_pool.name == "stablenew-gpu"
    assert specs["export-history"].schedules[0].cron == "* * * * *"
    assert any(s.schedules for name, s in specs.items() if name.startswith("nightly"))
