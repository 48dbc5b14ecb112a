"""WebUI credentials never leave the process that uses them.

A stack of its own (Prefect server, a simulator with ``--api-auth``, two workers: one given
``--webui http://user:SECRET@host``, one given its credentials through the environment) runs
a few jobs, each worker holds once (the simulator refuses every credential for a moment) and
the history is exported. Then every file the stack wrote (its data dir, which is also HOME:
logs, Prefect's database, outputs, history) and what Prefect's API answers (flow runs, logs,
variables, events, artifacts, workers, deployments, work pools, blocks), and what the CLI
prints (``queue``, ``up``), must not contain either password.
"""

from __future__ import annotations

import asyncio
import json
import os
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.settings import PREFECT_API_URL, temporary_settings
from typer.testing import CliRunner

from stablenew.cli.app import app
from stablenew.orchestration._prefect import prefect_client
from stablenew.orchestration.server.embedded import Stack, _python, free_port, healthy
from stablenew.orchestration.services.jobs import JobService
from stablenew.settings import get_settings
from tests.orchestration.conftest import make_record, wait_for

pytestmark = pytest.mark.slow

URL_SECRET = f"urlpw{uuid.uuid4().hex[:12]}"
ENV_SECRET = f"envpw{uuid.uuid4().hex[:12]}"
SECRETS = (URL_SECRET, ENV_SECRET)
runner = CliRunner()


@pytest.fixture(scope="module")
def stack(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[Stack, str]]:
    """The stack, with both workers up; yields it and the credentialed WebUI URL."""
    home = tmp_path_factory.mktemp("secret-home")
    saved = os.environ.get("HOME")
    os.environ["HOME"] = str(home)  # whatever a child writes under ~ lands in what we grep
    stack = Stack(home=home)
    try:
        auth = f"urluser:{URL_SECRET},envuser:{ENV_SECRET}"
        port = free_port()
        plain = f"http://127.0.0.1:{port}"
        argv = ["webui-sim", "--host", "127.0.0.1", "--port", str(port), "--api-auth", auth]
        stack._spawn("webui-sim", _python("stablenew", *argv), {})
        stack.start(prefect=True, simulator=False)
        assert stack.prefect_url is not None
        # Its A1111 routes want the credentials; its control routes do not.
        wait_for(lambda: healthy(f"{plain}/stablenew-sim/v1/stats"), timeout=60, what="the sim")
        with temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}):
            from stablenew.orchestration.services.deployments import apply

            async def deploy() -> None:
                async with prefect_client() as client:
                    await apply(client)

            asyncio.run(deploy())
            base = {"STABLENEW_HOME": str(home), "STABLENEW_OUTPUT_ROOT": str(home / "outputs")}
            # The stack's own worker, as `stablenew run` starts it for a configured WebUI.
            stack.webui_url = plain.replace("http://", f"http://urluser:{URL_SECRET}@")
            stack.start_worker(name="url-creds", extra_env=base)
            # One more with its credentials in the environment.
            stack.webui_url = plain
            stack.pids["worker-url"] = stack.pids.pop("worker")
            stack.start_worker(
                name="env-creds",
                extra_env={
                    **base,
                    "STABLENEW_WEBUI__USERNAME": "envuser",
                    "STABLENEW_WEBUI__PASSWORD": ENV_SECRET,
                },
            )
            stack.webui_url = plain.replace("http://", f"http://urluser:{URL_SECRET}@")
            stack.save()
            yield stack, plain
    finally:
        stack.stop()
        if saved is None:
            os.environ.pop("HOME", None)
        else:
            os.environ["HOME"] = saved


def _sim(url: str, path: str, **body: Any) -> Any:
    resp = httpx.post(f"{url}/stablenew-sim/v1/{path}", json=body, timeout=10)
    resp.raise_for_status()
    return resp.json()


def _cli(stack: Stack, *args: str) -> str:
    env = {
        "PREFECT_API_URL": stack.prefect_url or "",
        "STABLENEW_HOME": str(stack.home),
        "STABLENEW_WEBUI__URL": stack.webui_url or "",
        "STABLENEW_WEBUI__USERNAME": "envuser",
        "STABLENEW_WEBUI__PASSWORD": ENV_SECRET,
    }
    get_settings.cache_clear()
    try:
        result = runner.invoke(app, list(args), env=env)
    finally:
        get_settings.cache_clear()
    return f"{result.output}\n{result.exception!r}"


async def _api_answers() -> str:
    """What the API says about everything the stack did, as one text."""
    answers: list[str] = []
    async with prefect_client() as client:

        async def post(path: str, body: dict[str, Any]) -> Any:
            response = await client.request("POST", path, json=body)  # type: ignore[arg-type]
            answers.append(response.text)
            return response.json()

        async def get(path: str) -> None:
            answers.append((await client.request("GET", path)).text)  # type: ignore[arg-type]

        for path in (
            "/flow_runs/filter",
            "/task_runs/filter",
            "/logs/filter",
            "/variables/filter",
            "/artifacts/filter",
            "/deployments/filter",
            "/work_pools/filter",
            "/block_documents/filter",
            "/flows/filter",
        ):
            offset = 0
            while True:
                page = await post(path, {"limit": 200, "offset": offset})
                if not isinstance(page, list) or len(page) < 200:
                    break
                offset += 200
        for pool in ("stablenew-gpu", "stablenew-control"):
            await post(f"/work_pools/{pool}/workers/filter", {})
            await post(f"/work_pools/{pool}/queues/filter", {})
        page = await post("/events/filter", {"limit": 50, "filter": {"order": "ASC"}})
        while page.get("next_page"):
            page = (await client._client.get(page["next_page"])).json()
            answers.append(json.dumps(page))
        await get("/admin/settings")
    return "\n".join(answers)


def _files_with(root: Path, secrets: tuple[str, ...]) -> list[str]:
    hits: list[str] = []
    for path in sorted(p for p in root.rglob("*") if p.is_file()):
        data = path.read_bytes()
        for secret in secrets:
            if secret.encode() in data:
                hits.append(f"{path.relative_to(root)}: {secret[:5]}...")
    return hits


def test_no_credential_reaches_a_file_an_answer_or_the_terminal(
    stack: tuple[Stack, str],
) -> None:
    live, plain = stack
    assert live.prefect_url is not None
    outputs: list[tuple[str, str]] = []
    with temporary_settings(updates={PREFECT_API_URL: live.prefect_url}):
        service = JobService()
        records = [make_record(f"secret {i}") for i in range(4)]
        service.submit(records)
        wait_for(
            lambda: all(service.status(r.job_id).status.is_terminal for r in records),
            timeout=120,
            what="the jobs",
        )
        assert {service.status(r.job_id).status.value for r in records} == {"completed"}

        # Both workers hold: the WebUI refuses every credential for a moment.
        _sim(plain, "faults", reject_auth=True)
        held = make_record("secret while held")
        service.submit([held])

        def holding() -> bool:
            return len(service.queue_state().holds) == 2

        wait_for(holding, timeout=60, what="both workers to hold")
        outputs.append(("queue", _cli(live, "queue")))
        outputs.append(("queue --json", _cli(live, "queue", "--json")))
        _sim(plain, "faults", reject_auth=False)
        wait_for(
            lambda: service.status(held.job_id).status.is_terminal, timeout=60, what="the held job"
        )
        outputs.append(("up --json", _cli(live, "up", "--json")))
        outputs.append(("up", _cli(live, "up")))
        outputs.append(("history sync", _cli(live, "history", "sync")))
        outputs.append(("history ls", _cli(live, "history", "ls")))
        answers = asyncio.run(_api_answers())

    leaks = [
        f"{where} holds {secret[:5]}..."
        for secret in SECRETS
        for where, text in [("the API's answers", answers)]
        + [(f"`stablenew {name}`", out) for name, out in outputs]
        if secret in text
    ]
    assert leaks + _files_with(live.home, SECRETS) == []
