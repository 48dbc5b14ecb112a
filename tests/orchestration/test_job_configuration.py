"""Guards of the worker's job configuration, which skips Prefect's per-run settings dump: the
first fails when a Prefect upgrade stops taking a run's environment from
``_base_environment`` (the override would then silently do nothing)."""

from __future__ import annotations

import uuid

import pytest
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.base import BaseJobConfiguration

from stablenew.orchestration.worker.job_configuration import StableNewJobConfiguration

API = "http://127.0.0.1:9/api"  # never contacted


def _prepared(configuration_class: type[BaseJobConfiguration]) -> dict[str, str | None]:
    flow_run = FlowRun(id=uuid.uuid4(), name="tidy-fox", flow_id=uuid.uuid4())
    configuration = configuration_class()
    configuration.prepare_for_flow_run(flow_run=flow_run)
    return dict(configuration.env)


def test_a_runs_job_configuration_still_takes_its_environment_from_base_environment(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    # Prefect's base class dumps every setting there; the worker's override skips it.
    with temporary_settings(updates={PREFECT_API_URL: API}):
        assert BaseJobConfiguration._base_environment()["PREFECT_API_URL"] == API
    monkeypatch.setattr(
        StableNewJobConfiguration, "_base_environment", classmethod(lambda cls: {"MARK": "1"})
    )
    assert _prepared(StableNewJobConfiguration)["MARK"] == "1"


def test_an_in_process_runs_job_configuration_carries_no_settings_dump() -> None:
    with temporary_settings(updates={PREFECT_API_URL: API}):
        env = _prepared(StableNewJobConfiguration)
    # Settings are PREFECT_*; what Prefect adds about the run itself is PREFECT__*.
    assert [key for key in env if not key.startswith("PREFECT__")] == []
    assert env["PREFECT__FLOW_RUN_ID"]
