"""After every command of the vault issue, no plaintext of a secret (or its git id) is on disk."""

from __future__ import annotations

import base64
import hashlib
import os
from pathlib import Path

from tests.support import PASSWORD, pk_env, run_pk


def forms(secret: bytes) -> list[bytes]:
    blob_id = hashlib.sha1(b"blob %d\x00" % len(secret) + secret)
    return [
        secret,
        secret.hex().encode(),
        base64.b64encode(secret),
        blob_id.digest(),
        blob_id.hexdigest().encode(),
    ]


def leaks(paths: list[Path], needles: list[bytes]) -> list[str]:
    found = []
    for root in paths:
        files = [root] if root.is_file() else [p for p in root.rglob("*") if p.is_file()]
        for file in files:
            data = file.read_bytes()
            found += [f"{file}: {n[:12]!r}" for n in needles if n in data]
    return found


def test_no_command_leaves_a_secret_or_its_blob_id_on_disk(tmp_path: Path) -> None:
    canary = b"CANARY-" + os.urandom(12).hex().encode()
    tmpdir = tmp_path / "tmp"
    tmpdir.mkdir()
    node = tmp_path / "n.pk"
    env = pk_env(node, PK_PASSWORD=PASSWORD, PK_NO_AGENT="1", TMPDIR=str(tmpdir))
    source = tmp_path / "src"
    source.mkdir()
    (source / "f").write_bytes(canary + b"-dir")
    local = tmp_path / "local"
    local.write_bytes(canary + b"-file")
    editor = tmp_path / "editor.sh"
    editor.write_text("#!/bin/sh\nprintf 'edited' >> \"$1\"\n")
    editor.chmod(0o700)
    steps: list[tuple[tuple[str, ...], bytes | None]] = [
        (("bootstrap",), None),
        (("vaults", "create", "v"), None),
        (("vaults", "create", "w"), None),
        (("secrets", "write", "v:a/secret"), canary),
        (("secrets", "create", str(local), "v:a/file"), None),
        (("secrets", "dir", str(source), "v:imported"), None),
        (("secrets", "cat", "v:a/secret"), None),
        (("tags", "add", "v:a/secret", "t"), None),
        (("secrets", "cp", "v:a/secret", "w:copy"), None),
        (("secrets", "mv", "v:a/file", "v:b/file"), None),
        (("secrets", "mkdir", "v:empty"), None),
        (("secrets", "edit", "v:a/secret", "--allow-disk-temp"), None),
        (("secrets", "generate", "v:gen"), None),
        (("secrets", "grep", "CANARY"), None),
        (("vaults", "diff", "v", "HEAD~3", "-p"), None),
        (("vaults", "revert", "v", "HEAD~1"), None),
        (("secrets", "rm", "-r", "v:imported"), None),
        (("vaults", "rename", "w", "w2"), None),
        (("vaults", "rm", "w2", "--yes"), None),
        (("node", "check"), None),
    ]
    needles = [f for c in (canary, canary + b"-dir", canary + b"-file") for f in forms(c)]
    for args, stdin in steps:
        result = run_pk(*args, env={**env, "EDITOR": str(editor)}, input=stdin)
        assert result.returncode == 0, (args, result.stderr)
        on_disk = [p for p in (node, Path(f"{node}-wal"), Path(f"{node}-shm")) if p.exists()]
        assert leaks([*on_disk, tmpdir], needles) == [], args
