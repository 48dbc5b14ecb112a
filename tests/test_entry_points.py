"""The ways in, as a new user meets them: a fresh HOME, nothing configured, the `stablenew`
CLI run from different working directories, the SDK snippet in a separate process, the
Prefect UI's settings. One stack per data dir, found by every command; Prefect's temporary
server never used; `down` leaves no process behind; Ctrl-C on `run` leaves nothing Pending."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import signal
import subprocess
import sys
import textwrap
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest
from prefect.client.schemas.objects import StateType

from stablenew.orchestration.server.embedded import STATE_FILE, marked_groups

ROOT = Path(__file__).resolve().parents[1]


@dataclass
class User:
    """A new user: their own HOME, nothing configured, two folders to work from."""

    home: Path
    here: Path
    there: Path

    @property
    def data_dir(self) -> Path:
        return self.home / ".local" / "share" / "stablenew"

    def env(self, **extra: str) -> dict[str, str]:
        env = {
            k: v
            for k, v in os.environ.items()
            if not k.startswith(("STABLENEW_", "PREFECT_", "XDG_"))
        }
        env["HOME"] = str(self.home)
        env.update(extra)
        return env

    def cli(
        self, *args: str, cwd: Path | None = None, timeout: float = 120, **env: str
    ) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-m", "stablenew", *args],
            cwd=cwd or self.here, env=self.env(**env), capture_output=True, text=True,
            timeout=timeout,
        )  # fmt: skip

    def popen(self, *args: str, cwd: Path | None = None) -> subprocess.Popen[str]:
        return subprocess.Popen(
            [sys.executable, "-m", "stablenew", *args],
            cwd=cwd or self.here, env=self.env(), stdout=subprocess.PIPE,
            stderr=subprocess.PIPE, text=True,
        )  # fmt: skip

    def python(self, code: str, cwd: Path) -> subprocess.CompletedProcess[str]:
        return subprocess.run(
            [sys.executable, "-c", textwrap.dedent(code)],
            cwd=cwd, env=self.env(), capture_output=True, text=True, timeout=120,
        )  # fmt: skip


def _new_user(tmp_path: Path) -> User:
    user = User(tmp_path / "home", tmp_path / "here", tmp_path / "there")
    for path in (user.home, user.here, user.there):
        path.mkdir()
    return user


def _json(done: subprocess.CompletedProcess[str]) -> Any:
    assert done.returncode == 0, done.stderr[-3000:]
    return json.loads(done.stdout.strip().splitlines()[-1])


@pytest.fixture(scope="module")
def stack_user(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[User, dict[str, Any]]]:
    """A user who ran `stablenew up`; `stablenew down` afterwards, and nothing left running."""
    user = _new_user(tmp_path_factory.mktemp("user"))
    try:
        info = _json(user.cli("up", "--json", timeout=180))
        yield user, info
    finally:
        user.cli("down")
        leftovers = marked_groups(user.data_dir)
        for pgid in leftovers:  # do not leak into other tests, then fail
            os.killpg(pgid, signal.SIGKILL)
        assert not leftovers, "`stablenew down` left processes running"


def test_without_a_stack_every_door_says_how_to_start_one(tmp_path: Path) -> None:
    user = _new_user(tmp_path)
    for args in (("queue",), ("deploy",), ("submit", str(ROOT / "configs/packs/demo.yaml"))):
        done = user.cli(*args, timeout=60)
        assert done.returncode == 3, (args, done.stdout, done.stderr)
        assert "stablenew up" in done.stderr, done.stderr
    sdk = user.python(
        f"""
        from stablenew import JobService, PrefectUnavailable, build_jobs, load_pack
        records = list(build_jobs(load_pack({str(ROOT / "configs/packs/demo.yaml")!r})))
        try:
            JobService().submit(records, priority="high")
        except PrefectUnavailable as e:
            print("refused:", e)
        """,
        cwd=user.there,
    )
    assert "refused:" in sdk.stdout, sdk.stderr[-2000:]
    # Prefect's temporary server would have left its database in the user's ~/.prefect.
    assert not (user.home / ".prefect" / "prefect.db").exists()
    assert not list(user.here.iterdir())
    assert not list(user.there.iterdir())


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_one_stack_found_from_anywhere(stack_user: tuple[User, dict[str, Any]]) -> None:
    user, info = stack_user
    api = info["prefect_api"]
    # The UI is told the API it must call: this server's, not the default port 4200.
    ui_settings = httpx.get(f"{info['prefect_ui']}/ui-settings", timeout=10).json()
    assert ui_settings["api_url"] == api

    # Another folder, nothing exported: the same stack.
    queue = _json(user.cli("queue", "--json", cwd=user.there))
    assert queue["pool"] == "stablenew-gpu"
    assert (user.data_dir / STATE_FILE).is_file()

    # The README's SDK snippet, from yet another folder, talks to the stack and its jobs run.
    sdk = user.python(
        f"""
        import time
        from stablenew import JobService, build_jobs, load_pack
        records = list(build_jobs(load_pack({str(ROOT / "configs/packs/demo.yaml")!r})))
        service = JobService()
        job_ids = service.submit(records, priority="high")
        deadline = time.monotonic() + 90
        while time.monotonic() < deadline:
            states = [service.status(j).status.value for j in job_ids]
            if all(s in ("completed", "failed", "cancelled") for s in states):
                break
            time.sleep(0.5)
        print(",".join(states))
        """,
        cwd=user.home,
    )
    assert sdk.returncode == 0, sdk.stderr[-3000:]
    assert sdk.stdout.strip().split(",") == ["completed"] * 4

    # The printed UI link, in a browser where one is installed: the runs page lists them.
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser:
        dom = subprocess.run(
            [browser, "--headless", "--no-sandbox", "--disable-gpu",
             "--virtual-time-budget=15000", "--dump-dom", f"{info['prefect_ui']}/runs"],
            capture_output=True, text=True, timeout=90, env=user.env(),
        ).stdout  # fmt: skip
        assert "render-job" in dom
        assert "Something went wrong" not in dom

    # Following `up`'s advice (export PREFECT_API_URL) reuses the stack: no second one.
    groups = marked_groups(user.data_dir)
    # ...and a pack given by name works from any folder.
    run = _json(user.cli("run", "fox-matrix", "--json", cwd=user.there, PREFECT_API_URL=api))
    assert run["counts"] == {"completed": 6}
    assert run["stack_left_running"] is False
    assert marked_groups(user.data_dir) == groups
    assert (user.data_dir / STATE_FILE).is_file()
    assert Path(run["output_dir"]).is_relative_to(user.data_dir)
    # The matrix pack's contact sheet and gallery are there when `run` returns.
    assert (Path(run["output_dir"]) / "_grid" / "sheet.png").is_file()
    assert Path(run["gallery"]).is_file()
    assert Path(run["history"].removeprefix("sqlite:///")).is_relative_to(user.data_dir)

    # A re-run is a second run of the same job, in the history at once (no `history sync`).
    job = _json(user.cli("history", "ls", "--pack", "fox-matrix", "--json"))["jobs"][0]["job_id"]
    assert user.cli("rerun", job[:-4], cwd=user.home).returncode == 0
    explained = _json(user.cli("explain", job, "--json"))
    assert len(explained["runs"]) == 2
    assert explained["runs"][-1]["reason"] == "rerun"

    # A refused duplicate is bad input, and the message names the flag.
    again = user.cli("submit", str(ROOT / "configs/packs/demo.yaml"), "-p", "low")
    assert again.returncode == 2, again.stderr
    assert "--allow-duplicates" in again.stderr

    # Names are checked against the stack's WebUI before anything is queued.
    typo = user.there / "typo.yaml"
    demo = (ROOT / "configs/packs/demo.yaml").read_text()
    typo.write_text(demo.replace("pack: demo", "pack: typo").replace("emaonly", "emaonyl"))
    refused = user.cli("submit", str(typo))
    assert refused.returncode == 2, refused.stderr
    assert "did you mean 'v1-5-pruned-emaonly" in refused.stderr
    assert "nothing was queued" in refused.stderr

    # A stale URL is an error that names both URLs, not a second stack.
    stale = user.cli("queue", PREFECT_API_URL="http://127.0.0.1:9/api")
    assert stale.returncode == 3
    assert "http://127.0.0.1:9/api" in stale.stderr
    assert api in stale.stderr
    assert marked_groups(user.data_dir) == groups

    # `deploy` applies to the running stack, never to a temporary server.
    deploy = user.cli("deploy", cwd=user.there)
    assert deploy.returncode == 0, deploy.stderr
    assert api in deploy.stdout
    assert not (user.home / ".prefect" / "prefect.db").exists()


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_on_run_cancels_the_runs_unfinished_jobs(
    stack_user: tuple[User, dict[str, Any]],
) -> None:
    user, info = stack_user
    sim = f"{info['webui']}/stablenew-sim/v1"
    httpx.post(f"{sim}/timing", json={"seconds_per_image": 1.0}, timeout=10).raise_for_status()
    pack = ROOT / "configs/packs/fox-matrix.yaml"
    try:
        proc = user.popen("run", str(pack), cwd=user.there)
        deadline = time.monotonic() + 60
        while time.monotonic() < deadline:
            if httpx.get(f"{sim}/stats", timeout=10).json()["busy"]:
                break
            time.sleep(0.2)
        else:
            proc.kill()
            pytest.fail("no job started generating")
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
    finally:
        httpx.post(f"{sim}/timing", json={"seconds_per_image": 0.0}, timeout=10)
    assert proc.returncode == 130, err[-3000:]
    assert "Interrupted" in out, out
    assert "cancelling this run's jobs" in out
    queue = _json(user.cli("queue", "--json"))
    lists = ("pending", "running", "staged", "generating")
    assert [job for key in lists for job in queue.get(key, [])] == [], queue


@pytest.mark.slow
@pytest.mark.timeout(240)
def test_down_stops_the_stack_even_without_its_state_file(tmp_path: Path) -> None:
    user = _new_user(tmp_path)
    try:
        _json(user.cli("up", "--json", timeout=180))
        groups = marked_groups(user.data_dir)
        assert len(groups) == 4  # Prefect server, simulator, worker, gallery file server
        (user.data_dir / STATE_FILE).unlink()
        down = user.cli("down", cwd=user.there)
        assert down.returncode == 0
        assert "Nothing running" not in down.stdout
        assert marked_groups(user.data_dir) == set()
    finally:
        for pgid in marked_groups(user.data_dir):
            os.killpg(pgid, signal.SIGKILL)


@pytest.mark.slow
@pytest.mark.timeout(300)
def test_ctrl_c_with_keep_queued_puts_claimed_jobs_back_for_the_next_up(tmp_path: Path) -> None:
    from prefect.client.schemas.filters import FlowRunFilter, FlowRunFilterTags
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from stablenew.orchestration._prefect import prefect_client

    user = _new_user(tmp_path)
    state = user.data_dir / STATE_FILE
    try:
        proc = user.popen("run", str(ROOT / "configs/packs/fox-matrix.yaml"), "--keep-queued")
        deadline = time.monotonic() + 120
        sim = None
        while time.monotonic() < deadline and sim is None:
            webui = json.loads(state.read_text()).get("webui_url") if state.is_file() else None
            if webui:
                sim = f"{webui}/stablenew-sim/v1"
                with contextlib.suppress(httpx.HTTPError):
                    httpx.post(f"{sim}/timing", json={"seconds_per_image": 2.0}, timeout=5)
            time.sleep(0.2)
        assert sim is not None, "run never recorded its stack"
        while time.monotonic() < deadline:
            with contextlib.suppress(httpx.HTTPError):
                if httpx.get(f"{sim}/stats", timeout=5).json()["busy"]:
                    break
            time.sleep(0.2)
        proc.send_signal(signal.SIGINT)
        out, err = proc.communicate(timeout=120)
        assert proc.returncode == 130, err[-3000:]
        assert "--keep-queued" in out
        assert marked_groups(user.data_dir) == set()  # run stopped what it started

        info = _json(user.cli("up", "--json", timeout=180))

        async def pack_runs() -> list[Any]:
            async with prefect_client() as client:
                return await client.read_flow_runs(
                    flow_run_filter=FlowRunFilter(tags=FlowRunFilterTags(all_=["pack:fox-matrix"]))
                )

        with temporary_settings(updates={PREFECT_API_URL: info["prefect_api"]}):
            deadline = time.monotonic() + 120
            while time.monotonic() < deadline:
                runs = asyncio.run(pack_runs())
                if all(r.state_type == StateType.COMPLETED for r in runs):
                    break
                time.sleep(0.5)
        # Each of the six jobs ran to completion as its one run: none lost, none doubled.
        assert len(runs) == 6
        assert {r.state_type for r in runs} == {StateType.COMPLETED}
    finally:
        user.cli("down")
        for pgid in marked_groups(user.data_dir):
            os.killpg(pgid, signal.SIGKILL)
