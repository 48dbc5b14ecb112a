"""``stablenew worker``: one in-process worker bound to one WebUI (one GPU)."""

from __future__ import annotations

import asyncio
import logging
import os
import signal
import socket
import sys
import threading
import time
from typing import Any

import typer

from stablenew.cli._output import EXIT_FAILED, console, guarded
from stablenew.errors import WebUIError

# The control pool gets an export run a minute and the odd submit-pack from the UI.
CONTROL_POLL_SECONDS = 2.0
# After the worker's loop died: how long its flows (told to stop) may take to end.
ABANDON_EXIT_SECONDS = 20.0
# How long the events and log lines still queued for the Prefect API may take to go out.
FLUSH_SECONDS = 5.0
log = logging.getLogger("stablenew.worker")


def register(root: typer.Typer) -> None:
    root.command("worker")(worker)


@guarded
def worker(
    webui: str = typer.Option(
        ...,
        "--webui",
        envvar="STABLENEW_WEBUI__URL",
        help="WebUI base URL this worker (GPU) uses (credentials in it are used, never shown; "
        "or give it through STABLENEW_WEBUI__URL, off the command line).",
    ),
    name: str = typer.Option(None, "--name", help="Worker name shown in Prefect."),
    pool: str = typer.Option(None, "--pool", help="GPU work pool (default: settings)."),
    poll_seconds: float = typer.Option(0.2, "--poll-seconds", help="How often to poll for jobs."),
    lookahead: int = typer.Option(
        4,
        "--lookahead",
        min=0,
        help="Jobs claimed and started ahead, waiting for the GPU, so the next request "
        "goes out the moment the current one ends (0: strictly one run at a time).",
    ),
    control: bool = typer.Option(
        False, "--control", help="Also serve the control pool (submit-pack, exports)."
    ),
) -> None:
    """Run jobs from the GPU pool one at a time against one WebUI.

    Ctrl-C or SIGTERM stops it gracefully: it claims nothing more, hands the jobs it claimed
    back to their queue, and lets the generating one finish (``worker.stop_grace`` seconds,
    then interrupts it and hands it back too). A second Ctrl-C skips the grace period."""
    # The flow code running in this process reads the WebUI from settings.
    os.environ["STABLENEW_WEBUI__URL"] = webui
    from prefect.settings import (
        PREFECT_WORKER_PREFETCH_SECONDS,
        PREFECT_WORKER_QUERY_SECONDS,
        temporary_settings,
    )

    from stablenew.orchestration.services.deployments import CONTROL_POOL
    from stablenew.orchestration.worker.gpu_worker import StableNewWorker
    from stablenew.orchestration.worker.recovery_duty import RecoveryPolicy
    from stablenew.orchestration.worker.webui_access import webui_client
    from stablenew.settings import get_settings

    # Prefect configures only its own loggers; ours (GPU gate, holds) go to the same stream.
    handler = logging.StreamHandler()
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s.%(msecs)03d | %(levelname)-7s | %(name)s - %(message)s", "%H:%M:%S"
        )
    )
    logging.getLogger("stablenew").addHandler(handler)
    logging.getLogger("stablenew").setLevel(logging.INFO)
    logging.getLogger("stablenew").propagate = False
    get_settings.cache_clear()
    settings = get_settings()
    client = webui_client(settings)
    worker_name = name or f"gpu-{socket.gethostname()}-{os.getpid()}"

    def readiness() -> str | None:
        try:
            return None if client.is_ready() else f"WebUI at {client.base_url} is not answering"
        except WebUIError as e:  # e.g. 401: waiting alone will not fix it, but say so
            return f"WebUI at {client.base_url} refuses us: {e}"

    workers: list[StableNewWorker] = [
        StableNewWorker(
            work_pool_name=pool or settings.work_pool,
            name=worker_name,
            lookahead=lookahead,  # the GPU gate still lets one job at a time use the WebUI
            prefetch_seconds=0,
            readiness_check=readiness,
            interrupter=client.interrupt,
            heartbeat_interval_seconds=max(1, round(settings.worker.heartbeat_seconds)),
            recovery_policy=RecoveryPolicy(
                dead_after=settings.worker.dead_after,
                retries_on_crash=settings.worker.retries_on_crash,
            ),
        )
    ]
    if control:
        workers.append(
            StableNewWorker(
                work_pool_name=CONTROL_POOL,
                name=f"{worker_name}-control",
                min_poll_seconds=CONTROL_POLL_SECONDS,
            )
        )

    # Import the render flow's code now: the first claimed runs would otherwise all wait on
    # this cold start together and reach the GPU gate in arbitrary order.
    from prefect.flows import load_flow_from_entrypoint

    from stablenew.orchestration.services.deployments import project_root

    load_flow_from_entrypoint(str(project_root() / "flows" / "render.py") + ":render_job")

    async def serve() -> None:
        main = asyncio.current_task()
        assert main is not None
        signals = 0

        async def stop() -> None:
            await asyncio.gather(
                *(w.stop(settings.worker.stop_grace, client.interrupt) for w in workers)
            )
            main.cancel()  # nothing is in flight any more: end the polling loops

        def on_signal(signum: int) -> None:
            nonlocal signals
            signals += 1
            if signals == 1:
                console.print(
                    f"stopping ({signal.Signals(signum).name}): handing claimed jobs back; "
                    f"the generating one may finish (up to {settings.worker.stop_grace:g}s, "
                    "Ctrl-C again to interrupt it now)"
                )
                asyncio.get_running_loop().create_task(stop())
            elif signals == 2:
                for w in workers:
                    w.stop_now()
            else:
                os._exit(130)  # a third: the user wants out, whatever is left

        loop = asyncio.get_running_loop()
        for sig in (signal.SIGINT, signal.SIGTERM):
            loop.add_signal_handler(sig, on_signal, sig)
        try:
            await asyncio.gather(*(w.start(printer=console.print) for w in workers))
        except asyncio.CancelledError:
            if not signals:
                raise
        except Exception:
            # The loop is gone (a Prefect service of the worker failed): its log is the only
            # record, so the whole traceback goes there. Flows still in their threads must
            # not write states for runs the pool is about to give to others.
            log.exception("worker %s stopped on an unexpected error", worker_name)
            for w in workers:
                w.abandon()
            raise

    updates: dict[Any, Any] = {
        PREFECT_WORKER_QUERY_SECONDS: poll_seconds,
        PREFECT_WORKER_PREFETCH_SECONDS: 0,
    }
    try:
        with temporary_settings(updates=updates):
            asyncio.run(serve())
    except Exception:
        _exit_when_flows_end(ABANDON_EXIT_SECONDS)
        raise
    console.print("worker stopped")
    from stablenew.orchestration._prefect import flush_to_prefect

    if not flush_to_prefect(FLUSH_SECONDS):
        console.print(f"the Prefect API took no events or logs in {FLUSH_SECONDS:g}s; not waiting")
        sys.stdout.flush()
        sys.stderr.flush()
        os._exit(0)  # Prefect would wait for the API at interpreter exit, for ever


def _exit_when_flows_end(timeout: float) -> None:
    """Wait (bounded) for the flow threads an abandoned worker left, then leave even if one
    hangs (a WebUI request that never answers): they would keep the process alive."""
    deadline = time.monotonic() + timeout
    me = threading.current_thread()
    left = [t for t in threading.enumerate() if t is not me and not t.daemon]
    for thread in left:
        thread.join(max(0.0, deadline - time.monotonic()))
    if any(t.is_alive() for t in left):
        os._exit(EXIT_FAILED)
