"""Helpers for the black-box CLI tests: run `pk`, read its output, check its error contract."""

from __future__ import annotations

import contextlib
import hashlib
import json
import sqlite3
import subprocess
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tests.support import PASSWORD, pk_env, run_pk

BASE32HEX = "0123456789abcdefghijklmnopqrstuv"
Result = subprocess.CompletedProcess[bytes]


@dataclass(frozen=True)
class CliNode:
    """A node file made by `pk bootstrap`, with what bootstrap printed for it."""

    path: Path
    node_id: str
    code: str
    password: str = PASSWORD

    def env(self, **extra: str) -> dict[str, str]:
        """PK_NODE and PK_PASSWORD for this node (plus ``extra``)."""
        return pk_env(self.path, PK_PASSWORD=self.password, **extra)

    def at(self, path: Path) -> CliNode:
        return CliNode(path, self.node_id, self.code, self.password)


def text(data: bytes) -> str:
    return data.decode("utf-8", errors="replace")


def bootstrap(path: Path, password: str = PASSWORD, *args: str) -> CliNode:
    """`pk bootstrap --format json` with the password from PK_PASSWORD."""
    result = run_pk("bootstrap", "--format", "json", *args, env=pk_env(path, PK_PASSWORD=password))
    assert_ok(result, password)
    doc = json_stdout(result)
    return CliNode(path, doc["node_id"], doc.get("recovery_code", ""), password)


def assert_ok(result: Result, *secrets: str) -> None:
    """Exit 0, nothing on stderr, no traceback, and no secret in the output."""
    assert result.returncode == 0, text(result.stderr)
    assert result.stderr == b"", text(result.stderr)
    assert b"Traceback" not in result.stdout
    assert_no_leak(result, secrets or (PASSWORD,))


def assert_no_leak(result: Result, secrets: Iterable[str]) -> None:
    for secret in secrets:
        assert secret.encode() not in result.stdout, f"{secret!r} leaked to stdout"
        assert secret.encode() not in result.stderr, f"{secret!r} leaked to stderr"


def json_stdout(result: Result) -> dict[str, Any]:
    """Standard output parsed as exactly one JSON object on one line."""
    lines = result.stdout.decode("utf-8").splitlines()
    assert len(lines) == 1, result.stdout
    doc = json.loads(lines[0])
    assert isinstance(doc, dict), doc
    return doc


def assert_error(
    result: Result,
    exit_code: int,
    *,
    hint: bool = True,
    secrets: Iterable[str] = (PASSWORD,),
    stdout_empty: bool = True,
) -> str:
    """The human error contract: one `pk: error:` line, a `pk: hint:` line when the class has
    one, the documented exit code, no traceback and no secret. Returns the error message."""
    err = text(result.stderr)
    assert result.returncode == exit_code, (result.returncode, err)
    assert "Traceback" not in err
    assert b"Traceback" not in result.stdout
    assert err.startswith("pk: error: "), err
    lines = err.splitlines()
    if hint:
        assert len(lines) == 2, err
        assert lines[1].startswith("pk: hint: ") and len(lines[1]) > len("pk: hint: "), err
    else:
        assert len(lines) == 1, err
    assert_no_leak(result, secrets)
    if stdout_empty:
        assert result.stdout == b"", result.stdout
    return lines[0].removeprefix("pk: error: ")


def assert_json_error(
    result: Result, exit_code: int, *, secrets: Iterable[str] = (PASSWORD,)
) -> dict[str, Any]:
    """The --format json error contract: one JSON object on stderr carrying the exit code."""
    err = text(result.stderr)
    assert result.returncode == exit_code, (result.returncode, err)
    assert "Traceback" not in err
    assert result.stdout == b"", result.stdout
    lines = err.splitlines()
    assert len(lines) == 1, err
    doc = json.loads(lines[0])
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    error = doc["error"]
    assert error["exit_code"] == exit_code
    assert isinstance(error["message"], str) and error["message"]
    assert isinstance(error["hint"], str)
    assert_no_leak(result, secrets)
    return dict(error)


def write(path: Path, content: str | bytes) -> Path:
    if isinstance(content, str):
        path.write_text(content, encoding="utf-8")
    else:
        path.write_bytes(content)
    return path


# --- tampering with a node file the way damage or a hostile file would ----------------------------


def edit_header(path: Path, change: Callable[[dict[str, Any]], None]) -> None:
    """Change the header JSON and store a matching SHA-256 checksum, so only the change counts."""
    with contextlib.closing(sqlite3.connect(path)) as conn:
        (body,) = conn.execute("SELECT body FROM header WHERE id = 1").fetchone()
        doc = json.loads(body)
        change(doc)
        new = json.dumps(doc, sort_keys=True, separators=(",", ":")).encode()
        conn.execute(
            "UPDATE header SET body = ?, checksum = ? WHERE id = 1",
            (new, hashlib.sha256(new).digest()),
        )
        conn.commit()


def corrupt_record(path: Path, which: str) -> None:
    """Flip one byte of a record's sealed column.

    A fresh node holds two records: node/keys root-seed (a 32-byte value) and node/meta created
    (a 25-character timestamp), so the root seed is the longer ciphertext.
    """
    with contextlib.closing(sqlite3.connect(path)) as conn:
        rows = conn.execute("SELECT ns, name, sealed FROM record").fetchall()
        assert len(rows) == 2, "a fresh node holds the root seed and the creation time"
        pick = max if which == "root-seed" else min
        ns, name, sealed = pick(rows, key=lambda row: len(row[2]))
        damaged = bytearray(sealed)
        damaged[len(damaged) // 2] ^= 0x40
        conn.execute(
            "UPDATE record SET sealed = ? WHERE ns = ? AND name = ?", (bytes(damaged), ns, name)
        )
        conn.commit()


def non_canonical_node_id(node_id: str) -> str:
    """The same key with a non-zero trailing (padding) bit: decoders must refuse it."""
    last = BASE32HEX.index(node_id[-1])
    return node_id[:-1] + BASE32HEX[last ^ 1]
