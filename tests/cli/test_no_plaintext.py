"""No plaintext on disk: after every vault and secret command, a canary value or path is nowhere
in the node file, its WAL and shared-memory files, the temporary folder, or editor leftovers."""

from __future__ import annotations

import base64
import contextlib
import hashlib
import json
import os
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.cli.helpers import CliNode
from tests.support import run_pk


def text_forms(secret: bytes) -> list[bytes]:
    """The secret raw, in hex (both cases) and in base64 at each of the three alignments."""
    forms = [secret, secret.hex().encode(), secret.hex().upper().encode()]
    for shift in range(3):
        encoded = base64.b64encode(b"\x00" * shift + secret + b"\x00\x00\x00")
        forms.append(encoded[4 if shift else 0 : -8])
    return forms


def id_forms(value: bytes) -> list[bytes]:
    """The git blob id of a stored value, raw and in hex."""
    digest = hashlib.sha1(b"blob %d\x00" % len(value) + value)
    return [digest.digest(), digest.hexdigest().encode()]


def files_under(*roots: Path) -> Iterator[Path]:
    for root in roots:
        if root.is_file():
            yield root
        elif root.is_dir():
            yield from (p for p in root.rglob("*") if p.is_file())


def found(needles: dict[bytes, str], roots: list[Path]) -> list[str]:
    hits = []
    for file in files_under(*roots):
        with contextlib.suppress(FileNotFoundError):  # a WAL may vanish while we look
            data = file.read_bytes()
            hits += [f"{file}: {what}" for needle, what in needles.items() if needle in data]
    return hits


KEEPER = """
import sqlite3, sys
conn = sqlite3.connect(sys.argv[1])
conn.execute("SELECT count(*) FROM header").fetchone()
print("ready", flush=True)
sys.stdin.read()
conn.close()
"""


def edited(tmp_path: Path) -> list[str]:
    """The files the editor was given so far."""
    log = tmp_path / "edited"
    return log.read_text().splitlines() if log.exists() else []


@pytest.fixture
def world(cli_node: CliNode, tmp_path: Path) -> Iterator[tuple[CliNode, dict[str, str], Path]]:
    tmpdir = tmp_path / "tmpdir"
    tmpdir.mkdir()
    editor = tmp_path / "editor.sh"
    editor.write_text(
        f"#!/bin/sh\nprintf '%s\\n' \"$1\" >> '{tmp_path}/edited'\nprintf 'appended\\n' >> \"$1\"\n"
    )
    editor.chmod(0o700)
    env = cli_node.env(PK_NO_AGENT="1", TMPDIR=str(tmpdir), EDITOR=str(editor), VISUAL="")
    env.pop("XDG_RUNTIME_DIR", None)
    # A connection held open by another process keeps the -wal and -shm files on disk between
    # commands (the last connection to close would checkpoint and delete them), so the pages of
    # every write stay there to be searched. (Another process: this one reads those files, and
    # closing any descriptor of a file drops a process's POSIX locks on it.)
    keeper = subprocess.Popen(
        [sys.executable, "-c", KEEPER, str(cli_node.path)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert keeper.stdout is not None and keeper.stdout.readline() == b"ready\n"
    try:
        yield cli_node, env, tmpdir
    finally:
        keeper.communicate(timeout=30)


def test_no_command_leaves_a_secret_value_path_or_blob_id_on_disk(
    world: tuple[CliNode, dict[str, str], Path], tmp_path: Path
) -> None:
    node, env, tmpdir = world
    canary = "cnry" + os.urandom(14).hex()
    c = canary
    p = f"dir-{c}"
    value = canary.encode()
    local = tmp_path / "local.txt"
    local.write_bytes(b"file:" + value + b"\n")
    tree = tmp_path / "tree"
    (tree / f"sub-{c}").mkdir(parents=True)
    (tree / f"one-{c}").write_bytes(b"one " + value)
    (tree / f"sub-{c}" / "two").write_bytes(value + b" two\x00")
    stored = [value, local.read_bytes(), b"one " + value, value + b" two\x00"]
    stored.append(value + b"appended\n")  # after the edit

    needles: dict[bytes, str] = {}
    # where /dev/shm is not RAM-backed, `edit` refuses unless allowed (tested in test_secrets_cli)
    shm = [
        ln.split()[2] for ln in Path("/proc/mounts").read_text().splitlines() if " /dev/shm " in ln
    ]
    disk_temp = [] if shm and shm[-1] in ("tmpfs", "ramfs") else ["--allow-disk-temp"]

    def watch(secret: bytes, label: str) -> None:
        needles.update({form: f"{label} (text)" for form in text_forms(secret)})
        needles.update({form: f"{label} (blob id)" for form in id_forms(secret)})

    watch(value, "canary")
    for i, v in enumerate(stored):
        needles.update({form: f"value {i} (blob id)" for form in id_forms(v)})

    steps: list[tuple[tuple[str, ...], bytes | None]] = [
        (("vaults", "create", "v", "--tag", c), None),
        (("vaults", "create", "w"), None),
        (("secrets", "write", f"v:{p}/value"), value),
        (("secrets", "create", str(local), f"v:{p}/file-{c}"), None),
        (("secrets", "dir", str(tree), f"v:{p}/imported"), None),
        (("secrets", "cat", f"v:{p}/value", f"v:{p}/imported/one-{c}"), None),
        (("secrets", "cat", f"v:{p}/value", "--rev", "HEAD~1", "--format", "json"), None),
        (("secrets", "ls", "v", "-R"), None),
        (("tags", "add", f"v:{p}/value", c), None),
        (("secrets", "ls", "--tag", c), None),
        (("secrets", "stat", f"v:{p}/value"), None),
        (("secrets", "mv", f"v:{p}/file-{c}", f"v:{p}/moved-{c}"), None),
        (("secrets", "cp", f"v:{p}/value", f"v:{p}/copy-{c}"), None),
        (("secrets", "cp", f"v:{p}/value", f"w:copy-{c}"), None),
        (("secrets", "mv", f"v:{p}/copy-{c}", f"w:{p}/moved-across"), None),
        (("secrets", "mkdir", f"v:{p}/empty-{c}"), None),
        (("secrets", "mkdir", "-p", f"v:{p}/a-{c}/b-{c}"), None),
        (("secrets", "edit", f"v:{p}/value", *disk_temp), None),
        (("secrets", "generate", f"v:{p}/gen-{c}", "--show", "--format", "json"), None),
        (
            (
                "secrets",
                "generate",
                f"v:{p}/words-{c}",
                "--words",
                "6",
                "--show",
                "--format",
                "json",
            ),
            None,
        ),
        (("secrets", "history", f"v:{p}/value"), None),
        (("secrets", "find", c), None),
        (("secrets", "grep", c), None),
        (("vaults", "log", "v", "--path", f"{p}/value"), None),
        (("vaults", "diff", "v", "HEAD~8", "-p"), None),
        (("vaults", "show", "v", "HEAD~3"), None),
        (("vaults", "revert", "v", "HEAD~4"), None),
        (("tags", "rm", f"v:{p}/value", c), None),
        (("tags", "list"), None),
        (("vaults", "tag", "v", f"{c}-2"), None),
        (("vaults", "untag", "v", f"{c}-2"), None),
        (("secrets", "rm", f"v:{p}/moved-{c}"), None),
        (("secrets", "rm", "-r", f"v:{p}/imported"), None),
        (("vaults", "rename", "w", "w2"), None),
        (("vaults", "rm", "w2", "--yes"), None),
        (("node", "check"), None),
    ]
    roots = [node.path.parent, tmpdir]
    for args, stdin in steps:
        result = run_pk(*args, env=env, input=stdin if stdin is not None else b"")
        assert result.returncode == 0, (args, result.stderr)
        if args[:2] == ("secrets", "generate") and "--show" in args:
            watch(json.loads(result.stdout)["value"].encode(), "generated")
        leftovers = [Path(f).parent for f in edited(tmp_path) if Path(f).parent.exists()]
        assert found(needles, [*roots, *leftovers]) == [], args
        assert leftovers == [], args
    assert len(edited(tmp_path)) == 1, "the editor ran once"
    assert Path(f"{node.path}-wal").exists(), "the WAL was kept for inspection"
    assert len(needles) > 20
