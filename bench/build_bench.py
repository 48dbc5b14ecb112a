"""Builder throughput and memory: prints figures, asserts nothing (not a test).

Run: ``.venv/bin/python bench/build_bench.py``

1. Build rate (records/s) on a large cartesian pack (100,000 jobs, 3-stage chain, LoRA).
2. Streaming: the same shape at 100,000 and 1,000,000 jobs (limits raised); peak traced
   Python memory (tracemalloc) and max RSS must not grow with the job count.
"""

from __future__ import annotations

import resource
import sys
import tempfile
import time
import tracemalloc
from pathlib import Path

from stablenew.builder import build_jobs, count_jobs

PACK = """
pack: bench
defaults: {{model: v1-5-pruned-emaonly, sampler: DPM++ 2M, scheduler: Karras, steps: 20,
            width: 512, height: 512, images_per_prompt: {images}}}
seed: {{base: 1, policy: random}}
negative: blurry, lowres
limits: {{max_jobs: 2000000}}
matrix:
  mode: cartesian
  slots:
    subject: [{subjects}]
    style: [{styles}]
    light: [golden hour, blue hour, overcast, neon, candles, moonlight, studio, noon, dusk, dawn]
prompts:
  - text: "a ${{subject}} in ${{style}} style, ${{light}}, {{highly detailed|sharp focus}}"
    loras: [{{name: add_detail, weight: 0.5}}]
stages:
  - type: txt2img
  - type: img2img
    denoising_strength: 0.4
  - type: upscale
    upscaler: R-ESRGAN 4x+
    scale: 2
"""


def _write(directory: Path, name: str, subjects: int, images: int) -> Path:
    path = directory / f"{name}.yaml"
    path.write_text(
        PACK.format(
            images=images,
            subjects=", ".join(f"subject{i}" for i in range(subjects)),
            styles=", ".join(f"style{i}" for i in range(25)),
        ),
        encoding="utf-8",
    )
    return path


def _rate(path: Path) -> tuple[int, float]:
    start = time.perf_counter()
    n = sum(1 for _ in build_jobs(path, generation_defaults={}))
    return n, time.perf_counter() - start


def _peak(path: Path) -> tuple[int, float, float]:
    tracemalloc.start()
    n = sum(1 for _ in build_jobs(path, generation_defaults={}))
    _, peak = tracemalloc.get_traced_memory()
    tracemalloc.stop()
    rss_kib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return n, peak / 2**20, rss_kib / 1024


def main() -> None:
    with tempfile.TemporaryDirectory() as tmp:
        # 20 subjects x 25 styles x 10 lights x 2 choices x 10 images = 100,000 jobs
        small = _write(Path(tmp), "bench-100k", subjects=20, images=10)
        # 200 subjects: 1,000,000 jobs
        large = _write(Path(tmp), "bench-1m", subjects=200, images=10)
        print(f"python {sys.version.split()[0]}")
        print(
            f"counts: {count_jobs(small, generation_defaults={}):,} and "
            f"{count_jobs(large, generation_defaults={}):,} jobs (counted without expanding)"
        )
        _rate(small)  # warm-up: imports, parser grammar
        rates = []
        for _ in range(3):
            n, seconds = _rate(small)
            rates.append(n / seconds)
            print(f"build rate: {n:,} records in {seconds:.3f} s = {n / seconds:,.0f} records/s")
        print(f"best build rate: {max(rates):,.0f} records/s (target >= 100,000)")
        n, seconds = _rate(large)
        print(f"1M build: {n:,} records in {seconds:.2f} s = {n / seconds:,.0f} records/s")
        for path in (small, large):
            n, peak_mib, rss_mib = _peak(path)
            print(
                f"streaming {n:>9,} jobs: peak traced {peak_mib:.2f} MiB, max RSS {rss_mib:.1f} MiB"
            )


if __name__ == "__main__":
    main()
