"""One file: checkpoints copy the write-ahead log into the node file, and `copy_node` makes a
whole, consistent one-file copy with SQLite's backup API while another process writes."""

from __future__ import annotations

import shutil
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from polykey.errors import InvalidInput, NodeNotFound
from polykey.node import Node
from polykey.store.copies import CopyTargetExists, copy_node
from polykey.store.nodefile import NodeFile, read_header
from tests.conftest import NodeFixture
from tests.support import PASSWORD

# argv: node path, go file, stop file. The password comes on stdin. From when the go file appears
# until the stop file does, it creates vault wNNN and then writes secret log/NNN into vault alpha
# (one transaction each); it says "writing" once the first vault is in.
WRITER = r"""
import sys, time
from pathlib import Path
from polykey.node import Node

path, go, stop = Path(sys.argv[1]), Path(sys.argv[2]), Path(sys.argv[3])
password = sys.stdin.readline().rstrip("\n").encode()
node = Node.open(path, password, allow_weak=True)
print("ready", flush=True)
deadline = time.monotonic() + 60
while not go.exists():
    if time.monotonic() > deadline:
        sys.exit("the go file never appeared")
    time.sleep(0.001)
count = 0
while not stop.exists() or count < 3:
    if time.monotonic() > deadline:
        sys.exit("the stop file never appeared")
    node.vaults.create(f"w{count:03d}")
    node.vaults.open("alpha").write(f"log/{count:03d}", f"value {count}".encode())
    count += 1
    if count == 1:
        print("writing", flush=True)
node.close()
print("done", count, flush=True)
"""

BASE = ["alpha", "beta", "gamma"]


def _with_vaults(fx: NodeFixture) -> None:
    for name in BASE:
        fx.node.vaults.create(name).write("db/password", f"{name} password".encode())


def _vaults(path: Path) -> dict[str, dict[str, bytes]]:
    """Every vault of the node file at ``path`` with its secrets, after checking it whole."""
    with Node.open(path, PASSWORD.encode(), allow_weak=True) as node:
        assert node.check() == []
        out = {}
        for info in node.vaults.all():
            vault = node.vaults.open(info.name)
            secrets = [e.path for e in vault.ls(recursive=True) if e.kind == "secret"]
            out[info.name] = {p: vault.read(p) for p in secrets}
        return out


def _logged(count: int) -> dict[str, bytes]:
    return {f"log/{i:03d}": f"value {i}".encode() for i in range(count)}


def _journals(path: Path) -> list[Path]:
    return [p for p in path.parent.iterdir() if p.name.startswith(path.name + "-")]


def _one_file(path: Path) -> None:
    assert path.is_file()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert _journals(path) == []
    assert not [p for p in path.parent.iterdir() if p.name.endswith(".copying")]


def test_a_copy_taken_while_another_process_writes_is_whole_and_consistent(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    _with_vaults(fresh_node)
    go, stop = tmp_path / "go", tmp_path / "stop"
    writer = subprocess.Popen(
        [sys.executable, "-c", WRITER, str(fresh_node.path), str(go), str(stop)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    assert writer.stdin is not None and writer.stdout is not None
    try:
        writer.stdin.write(PASSWORD.encode() + b"\n")
        writer.stdin.close()
        assert writer.stdout.readline() == b"ready\n"
        copies = tmp_path / "copies"
        copies.mkdir()
        go.touch()
        assert writer.stdout.readline() == b"writing\n"  # the copies overlap the writes
        during = [copy_node(fresh_node.path, copies / f"during-{i}.pk") for i in range(3)]
        stop.touch()
        out = writer.stdout.read()
        writer.wait(timeout=60)
    finally:
        if writer.poll() is None:
            writer.kill()
            writer.wait()
    assert writer.returncode == 0
    written = int(out.split()[-1])
    for copy in during:
        _one_file(copy)
        vaults = _vaults(copy)
        # one snapshot: every vault made before the copy, a gap-free run of the writer's
        # vaults, and its secrets up to the last vault or the one before (in between commits)
        ws = sorted(name for name in vaults if name.startswith("w"))
        assert ws and ws == [f"w{i:03d}" for i in range(len(ws))]
        assert sorted(vaults) == sorted(BASE + ws)
        alpha = vaults.pop("alpha")
        assert alpha in [
            {"db/password": b"alpha password"} | _logged(n) for n in (len(ws) - 1, len(ws))
        ]
        assert {name: vaults[name] for name in BASE if name != "alpha"} == {
            "beta": {"db/password": b"beta password"},
            "gamma": {"db/password": b"gamma password"},
        }
    final = copy_node(fresh_node.path, copies / "after.pk")
    _one_file(final)
    vaults = _vaults(final)
    assert sorted(vaults) == sorted(BASE + [f"w{i:03d}" for i in range(written)])
    assert vaults["alpha"] == {"db/password": b"alpha password"} | _logged(written)
    assert vaults == _vaults(fresh_node.path)
    assert read_header(final, allow_weak=True) == fresh_node.node.store.header


def test_the_copy_of_a_node_held_open_holds_what_only_its_journal_had(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    _with_vaults(fresh_node)  # committed to node.pk-wal; the node stays open, nothing checkpoints
    assert (fresh_node.path.parent / "node.pk-wal").stat().st_size > 0
    copy = fresh_node.node.store.copy_to(tmp_path / "copy.pk")
    _one_file(copy)
    assert sorted(_vaults(copy)) == BASE
    with sqlite3.connect(copy) as conn:  # a normal node file: WAL mode, recorded in the file
        assert conn.execute("PRAGMA journal_mode").fetchone() == ("wal",)
    conn.close()
    _one_file(copy)


def test_a_folder_receives_the_copy_under_the_node_files_name(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    _with_vaults(fresh_node)
    folder = tmp_path / "usb"
    folder.mkdir()
    assert copy_node(fresh_node.path, folder) == folder / "node.pk"
    _one_file(folder / "node.pk")
    assert sorted(_vaults(folder / "node.pk")) == BASE


def test_an_existing_target_is_never_replaced(fresh_node: NodeFixture, tmp_path: Path) -> None:
    target = tmp_path / "taken.pk"
    target.write_bytes(b"something else")
    with pytest.raises(CopyTargetExists) as caught:
        copy_node(fresh_node.path, target)
    assert str(target) in caught.value.message and caught.value.user_hint
    assert caught.value.exit_code == 11
    assert target.read_bytes() == b"something else"
    link = tmp_path / "link.pk"
    link.symlink_to(tmp_path / "nowhere")
    with pytest.raises(CopyTargetExists):
        copy_node(fresh_node.path, link)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["link.pk", "node", "taken.pk"]


def test_an_old_journal_beside_the_target_is_refused(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    (tmp_path / "copy.pk-wal").write_bytes(b"an old journal")
    with pytest.raises(CopyTargetExists) as caught:
        copy_node(fresh_node.path, tmp_path / "copy.pk")
    assert "copy.pk-wal" in caught.value.message
    assert not (tmp_path / "copy.pk").exists()


def test_the_node_itself_and_its_journal_names_are_refused(fresh_node: NodeFixture) -> None:
    folder = fresh_node.path.parent
    before = sorted(p.name for p in folder.iterdir())
    for target in (fresh_node.path, folder, folder / ".." / folder.name / "node.pk"):
        with pytest.raises(InvalidInput, match="is the node file itself"):
            copy_node(fresh_node.path, target)
    for name in ("node.pk-wal", "node.pk-shm", "node.pk-journal"):
        with pytest.raises(InvalidInput, match="own journal"):
            copy_node(fresh_node.path, folder / name)
    assert sorted(p.name for p in folder.iterdir()) == before


def test_a_missing_source_or_folder_is_one_clear_error(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    with pytest.raises(NodeNotFound):
        copy_node(tmp_path / "none.pk", tmp_path / "copy.pk")
    with pytest.raises(InvalidInput, match="is not a folder") as caught:
        copy_node(fresh_node.path, tmp_path / "no" / "such" / "copy.pk")
    assert caught.value.user_hint


# --- checkpoints --------------------------------------------------------------------------


def test_a_checkpoint_puts_every_commit_into_the_file_alone(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    store = fresh_node.node.store
    store.checkpoint()
    assert store.written_at is None
    _with_vaults(fresh_node)
    assert store.written_at is not None
    plain = tmp_path / "plain" / "node.pk"
    plain.parent.mkdir()
    shutil.copyfile(fresh_node.path, plain)  # node.pk alone: the commits are in node.pk-wal
    assert _vaults(plain) == {}
    assert store.checkpoint() is True
    assert store.written_at is None
    shutil.copyfile(fresh_node.path, plain)  # the node stays open and in use
    assert sorted(_vaults(plain)) == BASE


def test_a_reader_holds_a_passive_checkpoint_back_without_an_error(
    fresh_node: NodeFixture,
) -> None:
    store = fresh_node.node.store
    reader = NodeFile.open(fresh_node.path, PASSWORD.encode(), allow_weak=True)
    try:
        with reader.snapshot():  # an older snapshot, as a slow reader in another process
            _with_vaults(fresh_node)
            assert store.checkpoint() is False  # at once, no error, the writer not blocked
            assert store.written_at is not None
            fresh_node.node.vaults.create("delta")
            assert store.checkpoint(truncate=True, wait=0.05) is False
        assert store.checkpoint() is True
        assert store.written_at is None
    finally:
        reader.close()


def test_no_checkpoint_inside_a_transaction_of_its_own(fresh_node: NodeFixture) -> None:
    store = fresh_node.node.store
    _with_vaults(fresh_node)
    with store.snapshot():
        assert store.checkpoint() is False
    assert store.checkpoint() is True


def test_truncate_and_close_leave_one_file(fresh_node: NodeFixture) -> None:
    _with_vaults(fresh_node)
    store = fresh_node.node.store
    wal = fresh_node.path.parent / "node.pk-wal"
    assert wal.stat().st_size > 0
    assert store.checkpoint(truncate=True) is True
    assert wal.stat().st_size == 0
    fresh_node.node.close()
    assert _journals(fresh_node.path) == []
    assert sorted(_vaults(fresh_node.path)) == BASE
