"""What ``run`` keeps up to date while a pack renders: its contact sheets and gallery (partial
while jobs finish, final at the end) and, at the end, the pack's keyed Prefect artifact.

The work runs in a thread, at most every few seconds, so the progress display never waits on
Pillow; a failure is reported once and never fails the run.
"""

from __future__ import annotations

import asyncio
import time

from stablenew.cli._output import err_console
from stablenew.packs import LoadedPack
from stablenew.settings import Settings

REFRESH_SECONDS = 5.0


class PackViews:
    def __init__(self, settings: Settings, pack: LoadedPack, expected_jobs: int) -> None:
        self.settings = settings
        self.pack = pack
        self.expected = expected_jobs
        self.last = 0.0
        self.failed = False

    def _rebuild(self) -> str | None:
        from stablenew.gallery import refresh_pack

        done = refresh_pack(
            self.settings.resolved_output_root,
            self.pack.spec.pack,
            pack=self.pack,
            expected_jobs=self.expected,
        )
        return str(done.gallery)

    async def _safely_rebuild(self) -> str | None:
        if self.failed:
            return None
        try:
            return await asyncio.to_thread(self._rebuild)
        except Exception as e:  # a view is never worth a failed run
            self.failed = True
            err_console.print(f"[yellow]gallery not updated[/]: {e!r}", highlight=False)
            return None

    async def refresh(self, finished: int) -> None:
        """Rebuild now and then while jobs finish (the first call records the grid axes)."""
        if finished and time.monotonic() - self.last < REFRESH_SECONDS:
            return
        self.last = time.monotonic()
        await self._safely_rebuild()

    async def finish(self) -> str | None:
        """The final sheets and gallery, and the pack's artifact; returns the gallery page."""
        page = await self._safely_rebuild()
        if page is None:
            return None
        from stablenew.orchestration.services.artifacts import apublish_pack_artifact

        try:
            await apublish_pack_artifact(
                self.pack.spec.pack,
                home=self.settings.home,
                output_root=self.settings.resolved_output_root,
                expected_jobs=self.expected,
            )
        except Exception as e:
            err_console.print(f"[yellow]pack artifact not published[/]: {e!r}", highlight=False)
        return page
