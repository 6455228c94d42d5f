"""Helpers shared by the tests: the test password, and running `pk` as a real process."""

from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

PASSWORD = "correct horse battery staple"


def pk_env(node_path: Path | None = None, **extra: str) -> dict[str, str]:
    """An environment for a `pk` process: fast KDF allowed, no inherited PK_* settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    env["PK_UNSAFE_FAST_KDF"] = "1"
    if node_path is not None:
        env["PK_NODE"] = str(node_path)
    env.update(extra)
    return env


def run_pk(
    *args: str,
    env: dict[str, str] | None = None,
    input: bytes | None = None,
    timeout: float = 60,
) -> subprocess.CompletedProcess[bytes]:
    """Run `python -m polykey ARGS` as a real process; never raises on a non-zero exit."""
    return subprocess.run(
        [sys.executable, "-m", "polykey", *args],
        env=env if env is not None else pk_env(),
        input=input,
        capture_output=True,
        timeout=timeout,
        check=False,
    )


def crash_pk(
    at: int, when: str, *args: str, env: dict[str, str], input: bytes | None = None
) -> subprocess.CompletedProcess[bytes]:
    """Run `pk ARGS` without an agent, ended at once at its ``at``-th write COMMIT, ``when``
    "before" or "after" it ran (bench/soak/crashat.py; exit 137 when it crashed)."""
    argv = [sys.executable, "-m", "bench.soak.crashat", str(at), when, *args]
    root = Path(__file__).resolve().parents[1]
    env = {**env, "PK_NO_AGENT": "1"}
    return subprocess.run(argv, env=env, input=input, capture_output=True, cwd=root, timeout=60)
