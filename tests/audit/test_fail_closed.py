"""Fail closed: with the node file's disk full, a read through the agent fails instead of
answering unrecorded; with space again, it answers and is recorded."""

from __future__ import annotations

import contextlib
import json
import os
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support import pk_env, run_pk


@pytest.fixture
def small_disk(tmp_path: Path) -> Iterator[Path]:
    """A 4 MiB tmpfs of its own (needs root; skipped otherwise)."""
    mount = tmp_path / "disk"
    mount.mkdir()
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root")
    done = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", "size=4m,mode=0700", "tmpfs", str(mount)],
        capture_output=True,
        check=False,
    )
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs: {done.stderr.decode().strip()}")
    try:
        yield mount
    finally:
        subprocess.run(["umount", "-l", str(mount)], check=False)


def _fill(folder: Path) -> Path:
    """Fill the filesystem of ``folder`` to the last byte; the filler's path."""
    filler = folder / "filler"
    with contextlib.suppress(OSError), filler.open("wb", buffering=0) as f:
        while True:
            f.write(b"\0" * 4096)
    with contextlib.suppress(OSError), filler.open("ab", buffering=0) as f:  # the last bytes
        while True:
            f.write(b"\0")
    return filler


def test_a_full_disk_fails_the_read_instead_of_answering_unrecorded(
    small_disk: Path, tmp_path: Path
) -> None:
    run = tmp_path / "run"
    run.mkdir(mode=0o700)
    env = pk_env(small_disk / "node.pk", PK_PASSWORD="pw", PK_RUNTIME_DIR=str(run))
    assert run_pk("bootstrap", env=env).returncode == 0
    assert run_pk("vaults", "create", "work", env=env).returncode == 0
    write = run_pk("secrets", "write", "work:db/password", env=env, input=b"the value")
    assert write.returncode == 0
    assert run_pk("agent", "start", "--background", env=env).returncode == 0
    try:
        filler = _fill(small_disk)
        refused = run_pk("secrets", "cat", "work:db/password", env=env)
        assert refused.returncode == 19, refused.stderr
        assert b"the value" not in refused.stdout + refused.stderr
        assert b"audit record could not be written" in refused.stderr
        filler.unlink()
        answered = run_pk("secrets", "cat", "work:db/password", env=env)
        assert answered.returncode == 0 and answered.stdout == b"the value"
        log = run_pk("audit", "log", "--format", "json", env=env)
        records = json.loads(log.stdout)["records"]
        assert [(r["action"], r["outcome"]) for r in records] == [("secrets.cat", "ok")]
    finally:
        run_pk("agent", "stop", env=env)
