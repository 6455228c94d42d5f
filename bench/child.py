"""Child node figures: a child's first pull of one vault (a fresh child node, a fresh `pk`
process, an SSH connection to the parent's agent on loopback) and its `pk secrets env -- CMD`
(a fresh `pk` process on the child's node file, no agent). Child node files use the fast test
KDF: with the production KDF, unlocking adds Argon2id's cost to both (or run the child's agent)."""

from __future__ import annotations

import shutil
import subprocess
import time

from bench.common import Row, median_ms, two_nodes


def section(quick: bool) -> list[Row]:
    tmp, pk, parent, _child, port = two_nodes("pk-bench-child-")
    n = 5 if quick else 11
    try:

        def run(env: dict[str, str], *args: str, stdin: bytes | None = None) -> str:
            done = subprocess.run(
                [pk, *args], env=env, check=True, capture_output=True, input=stdin
            )
            return done.stdout.decode()

        run(parent, "bootstrap")
        run(parent, "vaults", "create", "prod")
        for i in range(20):
            run(parent, "secrets", "write", f"prod:app/S{i:02d}", stdin=f"value {i}\n".encode())
        run(parent, "agent", "start", "--background", "--port", str(port))
        pulls: list[float] = []
        envs: list[float] = []
        for i in range(n):
            node = tmp / f"c{i}.pk"
            env = {**parent, "PK_NODE": str(node), "PK_PASSWORD": "child"}
            run(parent, "child", "create", f"c{i}", "--vault", "prod", "--to", str(node),
                stdin=b"child\n")  # fmt: skip
            t = time.perf_counter()
            run(env, "child", "pull")
            pulls.append(time.perf_counter() - t)
            t = time.perf_counter()
            run(env, "secrets", "env", "prod:app", "--", "true")
            envs.append(time.perf_counter() - t)
        run(parent, "agent", "stop")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    return [
        ("child: first pull of one vault (20 secrets)", f"{median_ms(pulls):.0f} ms", "< 500 ms"),
        ("child: pk secrets env -- CMD", f"{median_ms(envs):.0f} ms", "< 500 ms"),
    ]
