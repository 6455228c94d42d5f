"""A walk through Polykey with throwaway nodes in a temporary folder.

Two nodes, alice and bob, live on this machine. Each is one encrypted file. The demo shows what
works today: bootstrap, node info and check, signatures, encryption from one node to another,
a lost password recovered with the recovery code, a vault of secrets with its signed history,
the vault shared with bob's node, cloned over SSH and kept up to date by pulls, and what a
damaged file looks like.
"""

from __future__ import annotations

import contextlib
import os
import shutil
import socket
import sqlite3
import subprocess
import sys
import tempfile
from pathlib import Path

PK = [sys.executable, "-m", "polykey"]


def step(title: str) -> None:
    print(f"\n\033[1m== {title}\033[0m")


def pk(*args: str, env: dict[str, str], check: bool = True, stdin: bytes | None = None) -> str:
    shown = " ".join(["pk", *args])
    print(f"$ {shown}")
    result = subprocess.run([*PK, *args], env=env, input=stdin, capture_output=True, check=False)
    out = result.stdout.decode(errors="replace") + result.stderr.decode(errors="replace")
    if out.strip():
        print("  " + out.strip().replace("\n", "\n  "))
    if result.returncode:
        print(f"  [exit {result.returncode}]")
    if check and result.returncode != 0:
        raise SystemExit(f"demo step failed: {shown}")
    return result.stdout.decode()


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def main() -> int:
    work = Path(tempfile.mkdtemp(prefix="polykey-demo-"))
    base = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    base["PK_RUNTIME_DIR"] = str(work / "run")
    try:
        alice = dict(base, PK_NODE=str(work / "alice.pk"), PK_PASSWORD="alice's passphrase")
        bob = dict(base, PK_NODE=str(work / "bob.pk"), PK_PASSWORD="bob's passphrase")

        step("Two people each bootstrap a node: one encrypted file, a key pair, a NodeId")
        pk("bootstrap", "--recovery-code-out", str(work / "alice.code"), env=alice)
        pk("bootstrap", env=bob)
        pk("node", "info", env=alice)
        bob_id = pk("keys", "public", env=bob).splitlines()[0]

        step("Nothing in a node file is readable without the password")
        with contextlib.closing(sqlite3.connect(work / "alice.pk")) as db:
            rows = db.execute("SELECT hex(substr(sealed, 1, 24)) FROM record LIMIT 2").fetchall()
        for (row,) in rows:
            print(f"  sealed record: {row}...")

        step("Alice signs a file; anyone can verify it against her NodeId")
        note = work / "release-notes.txt"
        note.write_text("Version 1.0 is signed by alice.\n")
        alice_id = pk("keys", "public", env=alice).splitlines()[0]
        pk("keys", "sign", str(note), "-o", str(work / "notes.sig"), env=alice)
        pk("keys", "verify", str(note), str(work / "notes.sig"), alice_id, env=bob)
        note.write_text("Version 1.0 is signed by mallory.\n")
        pk("keys", "verify", str(note), str(work / "notes.sig"), alice_id, env=bob, check=False)

        step("Alice encrypts a secret to bob's NodeId (age format); only bob can read it")
        secret = work / "db-password.txt"
        secret.write_text("s3cr3t-for-bob\n")
        pk(
            "keys",
            "encrypt",
            str(secret),
            "--to",
            bob_id,
            "--armor",
            "-o",
            str(work / "for-bob.age"),
            env=alice,
        )
        secret.unlink()
        pk("keys", "decrypt", str(work / "for-bob.age"), env=bob)
        pk("keys", "decrypt", str(work / "for-bob.age"), env=alice, check=False)

        step("Alice forgets her password and sets a new one with her recovery code")
        lost = dict(alice, PK_PASSWORD="not the password")
        pk("node", "info", env=lost, check=False)
        code = (work / "alice.code").read_text().strip()
        pk(
            "keys",
            "recover",
            env=dict(alice, PK_RECOVERY_CODE=code, PK_NEW_PASSWORD="alice's new passphrase"),
        )
        alice["PK_PASSWORD"] = "alice's new passphrase"
        pk("node", "check", env=alice)

        step("Alice keeps secrets in a vault: every change is one signed git commit")
        pk("vaults", "create", "work", "--tag", "team", env=alice)
        pk("secrets", "write", "work:db/password", env=alice, stdin=b"hunter2")
        pk("secrets", "write", "work:db/user", env=alice, stdin=b"admin")
        pk("secrets", "generate", "work:api/token", "--length", "32", env=alice)
        pk("tags", "add", "work:db/password", "prod", env=alice)
        pk("secrets", "ls", "work", "-R", env=alice)
        pk("secrets", "write", "work:db/password", env=alice, stdin=b"correct-horse-2")
        pk("secrets", "cat", "work:db/password", env=alice)
        pk("secrets", "cat", "work:db/password", "--rev", "HEAD~1", env=alice)
        pk("vaults", "log", "work", env=alice)
        pk("secrets", "ls", "--tag", "prod", env=alice)
        pk("vaults", "revert", "work", "HEAD~1", env=alice)
        pk("secrets", "cat", "work:db/password", env=alice)

        step("Alice shares the vault with bob's node; bob clones it over SSH, then pulls updates")
        port = free_port()
        pk("vaults", "share", "work", bob_id, env=alice)
        pk("agent", "start", "--background", "--port", str(port), env=alice)
        try:
            pk("nodes", "add", alice_id, f"127.0.0.1:{port}", env=bob)
            pk("nodes", "ping", alice_id, env=bob)
            pk("vaults", "scan", alice_id, env=bob)
            pk("vaults", "clone", alice_id, "work", env=bob)
            pk("secrets", "cat", "work:db/password", env=bob)
            pk("secrets", "write", "work:db/password", env=alice, stdin=b"rotated-on-alice")
            pk("vaults", "pull", "work", env=bob)
            pk("secrets", "cat", "work:db/password", env=bob)
            pk("vaults", "log", "work", "-n", "2", env=bob)
            pk("vaults", "unshare", "work", bob_id, env=alice)
            pk("vaults", "pull", "work", env=bob, check=False)
        finally:
            pk("agent", "stop", env=alice, check=False)

        step("A damaged node file is reported by name, never read as wrong plaintext")
        shutil.copy(work / "alice.pk", work / "damaged.pk")
        with contextlib.closing(sqlite3.connect(work / "damaged.pk")) as db, db:
            db.execute("UPDATE record SET sealed = randomblob(length(sealed))")
        pk("node", "check", env=dict(alice, PK_NODE=str(work / "damaged.pk")), check=False)

        step("Also built")
        print(
            "  Merging (pk vaults pull/push/sync), own nodes (pk nodes link), backups"
            " (pk backup), identities and sharing with a person (pk identities, pk vaults share"
            " V github:NAME), key renewal (pk keys renew), child nodes for servers (pk child),"
            " folder shares (pk vaults share V:PATH), the audit log (pk audit), finding nodes"
            " (pk nodes find: LAN, relays, the DHT, connected peers, seeds, hole punching,"
            " PCP/NAT-PMP/UPnP port mapping), pk health,"
            " pk import/export, stock git clone and push."
        )
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
