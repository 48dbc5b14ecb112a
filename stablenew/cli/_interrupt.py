"""What Ctrl-C on ``stablenew run`` does, said on screen and then done.

By default the run's jobs are cancelled: queued ones never start, the one generating is
interrupted on the WebUI, and staged ones end CANCELLED through their worker, so nothing is
left Pending. With ``--keep-queued`` they stay queued instead: on a stack that keeps running
its worker goes on with them; on a stack ``run`` started and now stops, the worker is stopped
first and every run it had claimed goes back to its queue, to run at the next ``up``.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from prefect.client.schemas.objects import FlowRun

from stablenew.cli._output import console
from stablenew.cli._progress import summarize
from stablenew.orchestration.services.jobs import JobService
from stablenew.orchestration.services.queue_view import JobRef

if TYPE_CHECKING:
    from stablenew.cli.stack import Target

SETTLE_SECONDS = 60.0


def say_interrupted(message: str, *, quiet: bool = False) -> None:
    """The one line Ctrl-C on ``run`` prints: what becomes of the run's jobs."""
    if not quiet:
        console.print(f"[yellow]Interrupted[/]: {message}", highlight=False)


async def settle_after_interrupt(
    service: JobService,
    runs: Sequence[FlowRun],
    target: Target,
    *,
    keep_queued: bool,
    quiet: bool,
) -> dict[str, Any]:
    """Cancel or keep this run's unfinished jobs; returns the summary as it then stands."""
    from stablenew.orchestration.services.monitor import follow

    def say(message: str) -> None:
        say_interrupted(message, quiet=quiet)

    ids = [r.id for r in runs]
    stack_stays = not target.started
    if keep_queued and stack_stays:
        say(
            "the pack's unfinished jobs stay queued on the running stack "
            "(`stablenew queue`; `stablenew cancel --pack "
            f"{_pack_of(runs)}` cancels them)."
        )
    elif keep_queued:
        say(
            "stopping the worker; the job generating is interrupted and goes back to its "
            "queue with the rest of the pack (--keep-queued): they run at the next "
            "`stablenew up`."
        )
        if target.stack is not None:
            target.stack.stop_one("worker")
        await service.arequeue_runs(ids, reason="requeued: `stablenew run` was interrupted")
    else:
        say(
            "cancelling this run's jobs: queued ones will not start, the one generating is "
            "interrupted (use --keep-queued to keep them queued). Ctrl-C again stops at once."
        )
        await service.acancel_runs(ids)
    latest: dict[str, JobRef] = {}
    timeout = 0.0 if keep_queued else SETTLE_SECONDS
    async for snapshot in follow(ids, timeout=timeout):
        latest = snapshot
    summary = summarize(list(latest.values()), len(runs))
    summary["interrupted"] = True
    summary["left_queued"] = sum(1 for ref in latest.values() if not ref.status.is_terminal)
    if not quiet:
        counts = ", ".join(f"{n} {status}" for status, n in sorted(summary["counts"].items()))
        console.print(f"After the interrupt: {counts}.", highlight=False)
    return summary


def _pack_of(runs: Sequence[FlowRun]) -> str:
    for tag in runs[0].tags if runs else []:
        if tag.startswith("pack:"):
            return tag.removeprefix("pack:")
    return "PACK"
