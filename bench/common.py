"""Timing helpers shared by the benchmark sections."""

from __future__ import annotations

import statistics
import subprocess
import time
from collections.abc import Callable
from pathlib import Path

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


def two_nodes(prefix: str) -> tuple[Path, str, dict[str, str], dict[str, str], int]:
    """A fresh folder for two nodes, alice (a.pk) and bob (b.pk): the `pk` command, their
    environments (fast KDF; a `pk` timed as an installed one runs, its bytecode written once)
    and a free loopback port for alice's agent."""
    import os
    import shutil
    import socket
    import sys
    import tempfile

    tmp = Path(tempfile.mkdtemp(prefix=prefix))
    pk = shutil.which("pk", path=str(Path(sys.executable).parent)) or "pk"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    base.update(PK_UNSAFE_FAST_KDF="1", PK_RUNTIME_DIR=str(tmp / "run"))
    base.pop("PYTHONDONTWRITEBYTECODE", None)
    alice = {**base, "PK_NODE": str(tmp / "a.pk"), "PK_PASSWORD": "a"}
    bob = {**base, "PK_NODE": str(tmp / "b.pk"), "PK_PASSWORD": "b"}
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = int(sock.getsockname()[1])
    return tmp, pk, alice, bob, port
