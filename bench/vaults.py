"""Vault figures: secret writes and reads as the vault grows, ls -R, log; pass side by side."""

from __future__ import annotations

import os
import shutil
import subprocess
import tempfile
from pathlib import Path

from bench.common import Row, median_ms, run_process, timed
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults.vault import Vault


def _fill(vault: Vault, start: int, count: int) -> None:
    items = [
        (f"team{i % 100:02d}/svc{i % 7}/s{i:05d}", os.urandom(40))
        for i in range(start, start + count)
    ]
    for k in range(0, len(items), 2000):
        vault.write_many(items[k : k + 2000], "Import secrets.")


def _writes(vault: Vault, tag: str, n: int) -> list[float]:
    counter = iter(range(10**6))
    return timed(
        lambda: vault.write(f"team{next(counter) % 100:02d}/w{tag}{next(counter)}", os.urandom(40)),
        n,
    )


def section(quick: bool) -> list[Row]:
    rows: list[Row] = []
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-vaults-"))
    try:
        node, _ = Node.bootstrap(tmp / "node.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
        vault = node.vaults.create("bench")
        _fill(vault, 0, 100)
        n = 30 if quick else 100
        w100 = _writes(vault, "a", n)
        _fill(vault, 100, 9900)
        w10k = _writes(vault, "b", n)
        rows.append(
            (
                "write 1 secret (commit+sign+fsync), vault of 100",
                f"{median_ms(w100):.2f} ms",
                "< 5 ms",
            )
        )
        rows.append(
            (
                "write 1 secret, vault of 10,000 in nested folders",
                f"{median_ms(w10k):.2f} ms",
                "< 5 ms, flat",
            )
        )
        paths = [f"team{i % 100:02d}/svc{i % 7}/s{i:05d}" for i in range(0, 10000, 37)]
        reads = timed(lambda: [vault.read(p) for p in paths], 5)
        per = min(reads) / len(paths) * 1000
        vault.cache._items.clear()
        cold = timed(lambda: vault.read(paths[0]), 1)
        rows.append(("read 1 secret, vault of 10,000", f"{per:.3f} ms", "< 1 ms"))
        rows.append(("  first read, caches empty", f"{median_ms(cold):.3f} ms", ""))
        vault.cache._items.clear()
        ls = timed(lambda: vault.ls("", recursive=True), 3)
        rows.append(("ls -R of 10,000 secrets", f"{median_ms(ls):.0f} ms", "< 500 ms"))
        hist = node.vaults.create("history")
        for i in range(1000):
            hist.write(f"s{i % 50}", os.urandom(16))
        hist.cache._items.clear()
        log = timed(hist.log, 3)
        rows.append(("log of 1,000 commits", f"{median_ms(log):.0f} ms", "< 500 ms"))
        node.close()
        rows.extend(_pass_side_by_side(tmp, quick))
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return rows


def setup_pass(tmp: Path) -> dict[str, str] | None:
    """A throwaway GnuPG home and password store; None when pass or gpg is missing."""
    if shutil.which("pass") is None or shutil.which("gpg") is None:
        return None
    gnupg = tmp / "gnupg"
    gnupg.mkdir(mode=0o700, exist_ok=True)
    env = dict(os.environ, GNUPGHOME=str(gnupg), PASSWORD_STORE_DIR=str(tmp / "store"))
    subprocess.run(
        [
            "gpg",
            "--batch",
            "--passphrase",
            "",
            "--quick-gen-key",
            "bench@polykey.invalid",
            "default",
            "default",
            "never",
        ],
        env=env,
        check=True,
        capture_output=True,
    )
    subprocess.run(
        ["pass", "init", "bench@polykey.invalid"], env=env, check=True, capture_output=True
    )
    # pass with its git history on, as its users keep it and as every pk write is a commit
    env.update(
        GIT_AUTHOR_NAME="bench",
        GIT_AUTHOR_EMAIL="bench@polykey.invalid",
        GIT_COMMITTER_NAME="bench",
        GIT_COMMITTER_EMAIL="bench@polykey.invalid",
    )
    subprocess.run(["pass", "git", "init"], env=env, check=True, capture_output=True)
    return env


def _pass_side_by_side(tmp: Path, quick: bool) -> list[Row]:
    env = setup_pass(tmp)
    if env is None:
        return [("pass insert / pass show", "not installed", "apt-get install pass")]
    n = 10 if quick else 25
    counter = iter(range(10**6))
    inserts = [
        run_process(
            ["pass", "insert", "-m", f"team/s{next(counter)}"],
            env,
            1,
            stdin=os.urandom(20).hex().encode(),
        )[0]
        for _ in range(n)
    ]
    shows = run_process(["pass", "show", "team/s1"], env, n)
    return [
        ("pass insert (whole process), same run", f"{median_ms(inserts):.0f} ms", "peer"),
        ("pass show (whole process), same run", f"{median_ms(shows):.0f} ms", "peer"),
    ]
