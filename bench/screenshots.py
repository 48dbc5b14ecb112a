"""Screenshots of the gallery and of the Prefect UI's artifacts, for docs/.

    python bench/screenshots.py [--out docs] [--pack configs/packs/fox-matrix.yaml]

Starts a throwaway embedded stack (Prefect server, simulator, worker) and the loopback file
server, renders the pack, rebuilds its sheet and gallery as ``stablenew run`` does at the end,
publishes the pack's artifact, then captures with headless Chromium (Debian's ``chromium``):
the pack gallery, the contact sheet, the pack's keyed artifact, and one run's artifact in
the Prefect UI (the Artifacts list and key pages render their cards empty in headless
Chromium, so they are not captured). Prints what it wrote.
"""

from __future__ import annotations

import argparse
import asyncio
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def shoot(url: str, out: Path, size: str = "1280,900") -> None:
    browser = shutil.which("chromium") or shutil.which("chromium-browser")
    if browser is None:
        sys.exit("headless Chromium not found (apt-get install chromium)")
    subprocess.run(
        [browser, "--headless", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
         f"--window-size={size}", "--virtual-time-budget=15000", f"--screenshot={out}", url],
        check=True, capture_output=True, timeout=180,
    )  # fmt: skip
    print(f"wrote {out}  ({url})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--out", type=Path, default=ROOT / "docs")
    parser.add_argument("--pack", type=Path, default=ROOT / "configs/packs/fox-matrix.yaml")
    args = parser.parse_args()
    home = Path(tempfile.mkdtemp(prefix="stablenew-shots-"))
    os.environ["STABLENEW_HOME"] = str(home)

    from prefect.client.schemas.filters import ArtifactFilter, ArtifactFilterFlowRunId
    from prefect.settings import PREFECT_API_URL, temporary_settings

    from stablenew.builder import build_jobs
    from stablenew.gallery import refresh_pack, serving
    from stablenew.orchestration._prefect import prefect_client
    from stablenew.orchestration.server.embedded import Stack
    from stablenew.orchestration.services.artifacts import apublish_pack_artifact
    from stablenew.orchestration.services.deployments import apply
    from stablenew.orchestration.services.jobs import JobService
    from stablenew.packs import load_pack
    from stablenew.settings import get_settings

    settings = get_settings()
    root = settings.resolved_output_root
    pack = load_pack(args.pack)
    records = list(build_jobs(pack))
    stack = Stack(home=home)
    try:
        stack.start(prefect=True, simulator=True, sim_args=["--seconds-per-image", "0.2"])
        assert stack.prefect_url
        assert stack.ui_url
        with (
            temporary_settings(updates={PREFECT_API_URL: stack.prefect_url}),
            serving(root, home) as server,
        ):

            async def deploy() -> None:
                async with prefect_client() as client:
                    await apply(client)

            asyncio.run(deploy())
            stack.start_worker()
            service = JobService()
            runs = asyncio.run(service.asubmit_runs(records, "normal"))
            deadline = time.monotonic() + 300
            while not all(service.status(r.job_id).status.is_terminal for r in records):
                if time.monotonic() > deadline:
                    sys.exit("jobs did not finish in 5 minutes")
                time.sleep(1)
            done = refresh_pack(root, pack.spec.pack, pack=pack, expected_jobs=len(records))
            art = asyncio.run(
                apublish_pack_artifact(
                    pack.spec.pack, home=home, output_root=root, expected_jobs=len(records)
                )
            )

            async def run_artifact() -> str:
                async with prefect_client() as client:
                    found = await client.read_artifacts(
                        artifact_filter=ArtifactFilter(
                            flow_run_id=ArtifactFilterFlowRunId(any_=[runs[0].id])
                        )
                    )
                return str(next(a.id for a in found if a.key is None))

            args.out.mkdir(parents=True, exist_ok=True)
            rel = done.gallery.relative_to(root.resolve()).as_posix()
            shoot(f"{server.url}/{rel}", args.out / "gallery.png", "1280,1100")
            if done.sheets:
                shutil.copyfile(done.sheets.sheets[0].path, args.out / "contact-sheet.png")
                print(f"wrote {args.out / 'contact-sheet.png'}")
            # The version's own page: the key's page (/artifacts/key/pack-...) rendered
            # empty in headless Chromium.
            shoot(
                f"{stack.ui_url}/artifacts/artifact/{art.id}",
                args.out / "prefect-pack-artifact.png",
                "1280,1100",
            )
            shoot(
                f"{stack.ui_url}/artifacts/artifact/{asyncio.run(run_artifact())}",
                args.out / "prefect-run-artifact.png",
            )
    finally:
        stack.stop()
        shutil.rmtree(home, ignore_errors=True)


if __name__ == "__main__":
    main()
