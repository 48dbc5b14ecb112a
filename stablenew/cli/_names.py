"""Checking a pack's names (checkpoint, VAE, sampler, LoRA, ...) against the WebUI that will
render it, before anything is queued (``run`` and ``submit``)."""

from __future__ import annotations

from collections.abc import Sequence

from stablenew.cli._output import err_console
from stablenew.errors import PackError, WebUIError
from stablenew.packs import LoadedPack
from stablenew.records import NormalizedJobRecord


def check_pack_names(
    pack: LoadedPack, records: Sequence[NormalizedJobRecord], webui_url: str | None
) -> None:
    """Raise :class:`PackError` listing every name the WebUI does not have (with the nearest
    it has). A WebUI that does not answer only warns: jobs may wait for it in the queue."""
    if not webui_url:
        return
    from stablenew.orchestration.worker.webui_access import inventory_at
    from stablenew.webui.preflight import check_names

    try:
        inventory = inventory_at(webui_url)
    except WebUIError as e:
        err_console.print(f"[yellow]names not checked[/]: {e}", highlight=False)
        return
    issues = check_names(records, inventory, source=pack)
    if issues:
        raise PackError(issues)
