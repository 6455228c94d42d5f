"""Timing helpers shared by the benchmark sections."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable

Row = tuple[str, str, str]


def median_ms(samples: list[float]) -> float:
    return statistics.median(samples) * 1000


def timed(fn: Callable[[], object], n: int) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        fn()
        out.append(time.perf_counter() - t)
    return out


def run_process(
    args: list[str], env: dict[str, str], n: int, stdin: bytes | None = None
) -> list[float]:
    out = []
    for _ in range(n):
        t = time.perf_counter()
        subprocess.run(args, env=env, check=True, capture_output=True, input=stdin)
        out.append(time.perf_counter() - t)
    return out
