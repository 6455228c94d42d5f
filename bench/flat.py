"""Flat vaults: a whole `pk secrets write` process, agent running, into a vault of one secret, a
nested vault of 100,000 secrets, and flat vaults (every secret in the vault root, as the seed's
tag-grouped layout keeps them) of 10,000 and 100,000.

Each vault lives in a node of its own with its own agent, so what one write leaves behind (a
large tree written to the node file's log, checkpointed by a later commit) is paid by the writes
of that vault, not of the next one. The writes go round the four in turn, so all four see the
same machine; the ratios are taken within this run."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row, median_ms, run_process
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.vaults.vault import Vault

BATCH = 5000
# vault name -> (secrets in it, their paths, where the measured writes go)
LAYOUTS = {
    "one": (1, "s{i:06d}", "w{n}"),
    "nested100k": (100_000, "team{t:02d}/svc{s}/s{i:06d}", "team{t:02d}/svc{s}/w{n}"),
    "flat10k": (10_000, "s{i:06d}", "w{n}"),
    "flat100k": (100_000, "s{i:06d}", "w{n}"),
}


def _fill(vault: Vault, count: int, where: str) -> None:
    for k in range(0, count, BATCH):
        items = [
            (where.format(i=i, t=i % 100, s=i % 7), os.urandom(24).hex().encode())
            for i in range(k, min(count, k + BATCH))
        ]
        vault.write_many(items, f"Import {len(items)} secrets.")


def section(quick: bool) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-flat-"))
    pk = shutil.which("pk", path=str(Path(sys.executable).parent)) or "pk"
    base = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    base["PK_UNSAFE_FAST_KDF"] = "1"
    envs = {
        name: {**base, "PK_NODE": str(tmp / name / "node.pk"), "PK_RUNTIME_DIR": str(tmp / name)}
        for name in LAYOUTS
    }
    samples: dict[str, list[float]] = {name: [] for name in LAYOUTS}
    first: dict[str, float] = {}
    rss: dict[str, float] = {}
    rounds = 15 if quick else 40
    try:
        t = time.perf_counter()
        for name, (count, where, _) in LAYOUTS.items():
            node, _ = Node.bootstrap(
                tmp / name / "node.pk", b"bench", kdf=FAST_INSECURE_KDF, allow_weak=True
            )
            _fill(node.vaults.create(name), count, where)
            node.close()
        fill_s = time.perf_counter() - t
        for env in envs.values():
            subprocess.run(
                [pk, "agent", "start", "--background"],
                env={**env, "PK_PASSWORD": "bench"},
                check=True,
                capture_output=True,
            )
        for n in range(rounds + 1):
            for name, (_, _, where) in LAYOUTS.items():
                path = where.format(n=n, t=n % 100, s=n % 7)
                args = [pk, "secrets", "write", f"{name}:{path}"]
                took = run_process(args, envs[name], 1, stdin=b"value")[0]
                if n == 0:
                    first[name] = took  # the agent's caches are cold
                else:
                    samples[name].append(took)
        rss = {name: _agent_rss_mb(pk, env) for name, env in envs.items()}
    finally:
        for env in envs.values():
            subprocess.run([pk, "agent", "stop"], env=env, check=False, capture_output=True)
        shutil.rmtree(tmp, ignore_errors=True)
    ms = {name: median_ms(s) for name, s in samples.items()}
    nested = ms["nested100k"]
    return [
        ("pk secrets write, agent running (whole process):", "", ""),
        ("  vault of 1 secret", f"{ms['one']:.1f} ms", ""),
        ("  nested vault of 100,000 secrets", f"{nested:.1f} ms", ""),
        ("  flat vault of 10,000 secrets (all in the root)", f"{ms['flat10k']:.1f} ms", ""),
        ("  flat vault of 100,000 secrets (all in the root)", f"{ms['flat100k']:.1f} ms", ""),
        ("  ratio flat 10,000 / nested 100,000", f"{ms['flat10k'] / nested:.2f}", "< 1.3"),
        ("  ratio flat 100,000 / nested 100,000", f"{ms['flat100k'] / nested:.2f}", ""),
        ("  ratio vault of 1 / nested 100,000", f"{ms['one'] / nested:.2f}", ""),
        ("  first write after agent start, flat 10,000", f"{first['flat10k'] * 1000:.0f} ms", ""),
        ("  first write after agent start, flat 100,000", f"{first['flat100k'] * 1000:.0f} ms", ""),
        (
            f"agent memory after {rounds + 1} writes: flat 10,000 / 100,000",
            f"{rss['flat10k']:.0f} / {rss['flat100k']:.0f} MB",
            "",
        ),
        (
            "  the same, vault of 1 / nested 100,000",
            f"{rss['one']:.0f} / {rss['nested100k']:.0f} MB",
            "",
        ),
        ("filling the vaults (210,001 secrets, in-process)", f"{fill_s:.1f} s", ""),
    ]


def _agent_rss_mb(pk: str, env: dict[str, str]) -> float:
    status = subprocess.run(
        [pk, "agent", "status", "--format", "json"], env=env, check=True, capture_output=True
    ).stdout
    pid = json.loads(status)["pid"]
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0
