"""Guards of ``orchestration/worker/engine_patches.py`` (and of the worker's job configuration,
which skips Prefect's per-run settings dump): each fails when a Prefect upgrade
moves what a patch replaces (the patch would then silently do nothing), and each patch is
shown to do what it says. Installed here under monkeypatch, so the rest of the suite runs
stock Prefect."""

from __future__ import annotations

import asyncio
import inspect
import uuid

import prefect.client.orchestration as prefect_client_module
import prefect.flow_engine as prefect_flow_engine
import prefect.results as prefect_results
import pytest
from prefect.client.orchestration import PrefectClient, SyncPrefectClient
from prefect.client.schemas.objects import FlowRun
from prefect.settings import PREFECT_API_URL, temporary_settings
from prefect.workers.base import BaseJobConfiguration

from stablenew.orchestration.worker import engine_patches
from stablenew.orchestration.worker.gpu_worker import StableNewJobConfiguration

API = "http://127.0.0.1:9/api"  # never contacted: clients are only built


@pytest.fixture
def patched(monkeypatch: pytest.MonkeyPatch) -> None:
    # Recorded first, so that pytest puts Prefect back as it was after the test.
    monkeypatch.setattr(prefect_client_module, "ssl", prefect_client_module.ssl)
    monkeypatch.setattr(
        prefect_flow_engine,
        "observe_flow_run_suspension",
        prefect_flow_engine.observe_flow_run_suspension,  # type: ignore[attr-defined]
    )
    monkeypatch.setattr(
        prefect_results,
        "_read_server_default_result_storage_block_id",
        prefect_results._read_server_default_result_storage_block_id,
    )
    monkeypatch.setattr(engine_patches, "_installed", False)
    engine_patches.install()


def _tls_context(client: PrefectClient | SyncPrefectClient) -> object:
    return client._client._transport._pool._ssl_context  # type: ignore[union-attr]


def test_prefect_still_builds_a_tls_context_per_client_where_the_patch_expects() -> None:
    for cls in (PrefectClient, SyncPrefectClient):
        source = inspect.getsource(cls.__init__)
        assert "ssl.create_default_context(" in source, cls
    assert _tls_context(PrefectClient(API)) is not _tls_context(PrefectClient(API))


@pytest.mark.usefixtures("patched")
def test_every_client_of_the_process_shares_one_tls_context() -> None:
    async def build() -> list[object]:
        return [_tls_context(PrefectClient(API)) for _ in range(2)]

    contexts = [*asyncio.run(build()), _tls_context(SyncPrefectClient(API))]
    assert all(c is contexts[0] for c in contexts), contexts


def test_the_engine_still_observes_suspension_through_the_patched_name() -> None:
    engine = prefect_flow_engine.BaseFlowRunEngine
    setup = inspect.getsource(engine.setup_flow_run_suspension_request)
    assert "observe_flow_run_suspension(" in setup


@pytest.mark.usefixtures("patched")
def test_no_suspension_observer_is_started() -> None:
    observe = prefect_flow_engine.observe_flow_run_suspension  # type: ignore[attr-defined]
    assert observe is engine_patches._no_suspension_observer
    with observe(uuid.uuid4(), object()):
        pass


def test_the_default_storage_lookup_still_reads_the_server_through_the_patched_name() -> None:
    for fn in (prefect_results._get_default_result_storage,):
        assert "_read_server_default_result_storage_block_id()" in inspect.getsource(fn)


def test_the_server_default_storage_is_read_once(
    patched: None, monkeypatch: pytest.MonkeyPatch
) -> None:
    reads: list[int] = []

    def read() -> uuid.UUID | None:
        reads.append(1)
        return None

    monkeypatch.setattr(engine_patches, "_read_storage_block_id", read)
    monkeypatch.setattr(engine_patches, "_storage_block_id", engine_patches._STORAGE_UNREAD)
    for _ in range(3):
        prefect_results._get_default_result_storage()
    assert len(reads) == 1


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
