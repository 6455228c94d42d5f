"""Bad input and faults: missing things, wrong kinds, refused overwrites, kill -9, races."""

from __future__ import annotations

import json
import random
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from polykey.node import FAST_INSECURE_KDF, Node
from tests.support import PASSWORD, pk_env, run_pk

Result = subprocess.CompletedProcess[bytes]


@pytest.fixture
def env(node_path: Path) -> dict[str, str]:
    """A node with vaults v (dir/s, other, tagged) and w (taken), for `pk` processes."""
    node, _ = Node.bootstrap(node_path, PASSWORD.encode(), kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        v = node.vaults.create("v")
        v.write("dir/s", b"in dir")
        v.write("other", b"other value")
        w = node.vaults.create("w")
        w.write("taken", b"w value")
    return pk_env(node_path, PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")


def pk(env: dict[str, str], *args: str, input: bytes | None = b"") -> Result:
    return run_pk(*args, env=env, input=input)


def log_ids(env: dict[str, str], vault: str) -> list[str]:
    """The commit ids of a vault, newest first (read in-process: quicker than a `pk` process)."""
    with Node.open(Path(env["PK_NODE"]), PASSWORD.encode(), allow_weak=True) as node:
        return [c.id for c in node.vaults.open(vault).log()]


def error_line(result: Result, code: int) -> str:
    """The one-line error of a failed command (plus an optional hint line), no traceback."""
    err = result.stderr.decode()
    assert result.returncode == code, (result.returncode, err)
    assert "Traceback" not in err
    lines = err.splitlines()
    assert lines and lines[0].startswith("pk: error: "), err
    assert all(line.startswith("pk: hint: ") for line in lines[1:]), err
    assert len(lines) <= 2, err
    return lines[0]


def assert_node_whole(env: dict[str, str]) -> None:
    check = pk(env, "node", "check", "--format", "json")
    assert check.returncode == 0, check.stderr
    assert json.loads(check.stdout)["ok"] is True


# --- things that do not exist -------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("secrets", "cat", "ghost:s"),
        ("secrets", "write", "ghost:s"),
        ("secrets", "ls", "ghost"),
        ("secrets", "rm", "ghost:s"),
        ("secrets", "mv", "ghost:s", "v:x"),
        ("secrets", "cp", "v:other", "ghost:x"),
        ("secrets", "stat", "ghost:s"),
        ("secrets", "history", "ghost:s"),
        ("secrets", "mkdir", "ghost:d"),
        ("tags", "add", "ghost:s", "t"),
        ("vaults", "log", "ghost"),
        ("vaults", "show", "ghost", "HEAD"),
        ("vaults", "rename", "ghost", "new"),
        ("vaults", "rm", "ghost", "--yes"),
        ("vaults", "tag", "ghost", "t"),
    ],
    ids=lambda a: "-".join(a[:2]),
)
def test_a_vault_that_does_not_exist_is_exit_31_naming_it(
    env: dict[str, str], args: tuple[str, ...]
) -> None:
    line = error_line(pk(env, *args, input=b"value"), 31)
    assert "No such vault: ghost" in line


@pytest.mark.parametrize(
    ("args", "named"),
    [
        (("secrets", "cat", "v:missing/secret"), "v:missing/secret"),
        (("secrets", "cat", "v:other", "v:nope"), "v:nope"),
        (("secrets", "cat", "v:other/below"), "v:other/below"),
        (("secrets", "rm", "v:nope"), "nope"),
        (("secrets", "mv", "v:nope", "v:x"), "v:nope"),
        (("secrets", "cp", "v:nope", "w:x"), "v:nope"),
        (("secrets", "stat", "v:nope"), "v:nope"),
        (("secrets", "history", "v:nope"), "v:nope"),
        (("secrets", "ls", "v:nope"), "v:nope"),
        (("tags", "add", "v:nope", "t"), "v:nope"),
        (("secrets", "mkdir", "v:a/b"), "v:a"),
    ],
    ids=[
        "cat",
        "cat-several",
        "cat-below-secret",
        "rm",
        "mv",
        "cp-across",
        "stat",
        "history",
        "ls",
        "tags-add",
        "mkdir-no-parents",
    ],
)
def test_a_secret_that_does_not_exist_is_exit_33_naming_it(
    env: dict[str, str], args: tuple[str, ...], named: str
) -> None:
    before = log_ids(env, "v")
    line = error_line(pk(env, *args), 33)
    assert "No such secret" in line and named in line, line
    assert log_ids(env, "v") == before


def test_cat_of_several_secrets_with_one_missing_prints_none_of_them(env: dict[str, str]) -> None:
    result = pk(env, "secrets", "cat", "v:other", "v:missing")
    assert result.stdout == b""
    assert "v:missing" in error_line(result, 33)


def test_a_secret_that_did_not_exist_at_a_revision_is_exit_33(env: dict[str, str]) -> None:
    line = error_line(pk(env, "secrets", "cat", "v:other", "--rev", "HEAD~1"), 33)
    assert "v:other" in line


# --- wrong kinds --------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("args", "stdin"),
    [
        (("secrets", "write", "v:dir"), b"x"),
        (("secrets", "generate", "v:dir"), b""),
        (("secrets", "cat", "v:dir"), b""),
        (("secrets", "stat", "v:dir"), b""),
        (("secrets", "rm", "v:dir"), b""),
        (("secrets", "write", "v:other/below"), b"x"),
    ],
    ids=["write", "generate", "cat", "stat", "rm", "below-a-secret"],
)
def test_a_secret_operation_on_a_directory_or_below_a_secret_is_exit_35(
    env: dict[str, str], args: tuple[str, ...], stdin: bytes
) -> None:
    before = log_ids(env, "v")
    line = error_line(pk(env, *args, input=stdin), 35)
    assert "directory" in line
    assert log_ids(env, "v") == before
    assert pk(env, "secrets", "cat", "v:dir/s").stdout == b"in dir"


def test_creating_a_secret_from_a_file_onto_a_directory_is_exit_35(
    env: dict[str, str], tmp_path: Path
) -> None:
    local = tmp_path / "f"
    local.write_bytes(b"x")
    assert "dir" in error_line(pk(env, "secrets", "create", str(local), "v:dir"), 35)


# --- overwriting needs --force ------------------------------------------------------------------


@pytest.mark.parametrize("verb", ["mv", "cp"])
@pytest.mark.parametrize(
    ("src", "dst", "dst_vault", "dst_path"),
    [("v:other", "v:dir/s", "v", "dir/s"), ("v:other", "w:taken", "w", "taken")],
    ids=["same-vault", "across-vaults"],
)
def test_mv_or_cp_onto_an_existing_secret_is_exit_34_and_force_replaces_it(
    env: dict[str, str], verb: str, src: str, dst: str, dst_vault: str, dst_path: str
) -> None:
    before = {name: log_ids(env, name) for name in ("v", "w")}
    line = error_line(pk(env, "secrets", verb, src, dst), 34)
    assert "already exists" in line and f"{dst_vault}:{dst_path}" in line
    assert {name: log_ids(env, name) for name in ("v", "w")} == before
    assert pk(env, "secrets", "cat", dst).stdout == (b"in dir" if dst_vault == "v" else b"w value")
    done = pk(env, "secrets", verb, src, dst, "--force")
    assert done.returncode == 0, done.stderr
    assert pk(env, "secrets", "cat", dst).stdout == b"other value"
    still_there = pk(env, "secrets", "cat", src)
    if verb == "cp":
        assert still_there.stdout == b"other value"
    else:
        error_line(still_there, 33)
    assert len(log_ids(env, dst_vault)) == len(before[dst_vault]) + 1
    assert_node_whole(env)


# --- revisions that do not exist ----------------------------------------------------------------


@pytest.mark.parametrize("rev", ["deadbeef", "0000000000000000000000000000000000000000", "HEAD~3"])
@pytest.mark.parametrize("command", ["revert", "show", "diff"])
def test_a_revision_that_does_not_exist_is_exit_37(
    env: dict[str, str], rev: str, command: str
) -> None:
    before = log_ids(env, "v")
    line = error_line(pk(env, "vaults", command, "v", rev), 37)
    assert "No such revision" in line and rev in line
    assert log_ids(env, "v") == before


def test_cat_at_a_revision_that_does_not_exist_is_exit_37(env: dict[str, str]) -> None:
    assert "HEAD~50" in error_line(pk(env, "secrets", "cat", "v:other", "--rev", "HEAD~50"), 37)


# --- kill -9 in the middle of an import ---------------------------------------------------------

FILES = 1000


def _import_tree(root: Path) -> None:
    rng = random.Random(7)
    for i in range(FILES):
        path = root / f"d{i % 10}" / f"sub{i % 3}" / f"s{i:04d}"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_bytes(rng.randbytes(40))


def _imported(env: dict[str, str], prefix: str) -> int:
    listed = pk(env, "secrets", "ls", "v", "-R", "--format", "json")
    assert listed.returncode == 0, listed.stderr
    entries = json.loads(listed.stdout)["entries"]
    return sum(1 for e in entries if e["kind"] == "secret" and e["path"].startswith(prefix + "/"))


def _start_import(env: dict[str, str], source: Path, target: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        [sys.executable, "-m", "polykey", "secrets", "dir", str(source), f"v:{target}"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _wait_for_wal_bytes(wal: Path, proc: subprocess.Popen[bytes], more_than: int) -> None:
    """Until the process has written more than ``more_than`` bytes to the WAL (its commit)."""
    deadline = time.monotonic() + 60
    while proc.poll() is None and time.monotonic() < deadline:
        try:
            if wal.stat().st_size > more_than:
                return
        except FileNotFoundError:
            pass


def test_kill_9_during_secrets_dir_leaves_none_or_all_of_1000_files(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "tree"
    _import_tree(source)
    wal = Path(env["PK_NODE"] + "-wal")
    started = time.monotonic()
    whole = _start_import(env, source, "whole")
    assert whole.wait(timeout=120) == 0
    duration = time.monotonic() - started
    assert _imported(env, "whole") == FILES
    rng = random.Random()
    # two kills the instant the import starts writing its transaction, three at random moments
    plans: list[tuple[str, float]] = [("wal", 0), ("wal", 32)] + [
        ("sleep", rng.uniform(0.3, 1.3) * duration) for _ in range(3)
    ]
    outcomes: list[tuple[str, float, int]] = []
    for attempt, (how, value) in enumerate(plans):
        commits = len(log_ids(env, "v"))
        proc = _start_import(env, source, f"run{attempt}")
        if how == "wal":
            _wait_for_wal_bytes(wal, proc, int(value))
        else:
            time.sleep(value)
        proc.send_signal(signal.SIGKILL)
        proc.wait()
        count = _imported(env, f"run{attempt}")
        outcomes.append((how, round(value, 3), count))
        assert count in (0, FILES), outcomes
        assert len(log_ids(env, "v")) == commits + (count == FILES)
        assert_node_whole(env)
    print("kill -9 outcomes (how, when, secrets):", outcomes)
    assert pk(env, "secrets", "write", "v:afterwards", input=b"ok").returncode == 0
    sample = source / "d3" / "sub0" / "s0003"
    assert pk(env, "secrets", "cat", "v:whole/d3/sub0/s0003").stdout == sample.read_bytes()


# --- concurrent writers -------------------------------------------------------------------------


def _race(env: dict[str, str], count: int) -> list[str]:
    """``count`` processes writing v:race/sN at once; returns the new commit ids, newest first."""
    before = log_ids(env, "v")
    procs = [
        subprocess.Popen(
            [sys.executable, "-m", "polykey", "secrets", "write", f"v:race/s{i}"],
            env=env,
            stdin=subprocess.PIPE,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )
        for i in range(count)
    ]
    time.sleep(0.3)  # let every interpreter start; each then blocks reading its value
    for i, proc in enumerate(procs):
        assert proc.stdin is not None
        proc.stdin.write(f"value {i}".encode())
    for proc in procs:
        assert proc.stdin is not None
        proc.stdin.close()
    for proc in procs:
        assert proc.stderr is not None
        err = proc.stderr.read()
        proc.stderr.close()
        assert proc.wait(timeout=120) == 0, err
    after = log_ids(env, "v")
    assert after[count:] == before
    return after[:count]


def _assert_all_landed(env: dict[str, str], count: int, new: list[str]) -> None:
    assert len(new) == count
    log = json.loads(pk(env, "vaults", "log", "v", "--format", "json").stdout)["commits"]
    chain = [c["id"] for c in log]
    for commit in log[:count]:
        assert len(commit["parents"]) == 1
        assert commit["parents"][0] == chain[chain.index(commit["id"]) + 1]
    assert sorted(c["message"] for c in log[:count]) == sorted(
        f"Add secret race/s{i}." for i in range(count)
    )
    for i in range(count):
        assert pk(env, "secrets", "cat", f"v:race/s{i}").stdout == f"value {i}".encode()
    assert_node_whole(env)


def test_two_processes_writing_one_vault_at_once_both_land_as_two_commits(
    env: dict[str, str],
) -> None:
    for _ in range(3):
        new = _race(env, 2)
        _assert_all_landed(env, 2, new)
        pk(env, "secrets", "rm", "-r", "v:race")


def test_twenty_processes_writing_one_vault_at_once_all_land(env: dict[str, str]) -> None:
    new = _race(env, 20)
    _assert_all_landed(env, 20, new)


def test_a_process_writing_while_another_imports_both_land(
    env: dict[str, str], tmp_path: Path
) -> None:
    source = tmp_path / "tree"
    _import_tree(source)
    before = len(log_ids(env, "v"))
    importer = subprocess.Popen(
        [sys.executable, "-m", "polykey", "secrets", "dir", str(source), "v:bulk"],
        env=env,
        stdin=subprocess.DEVNULL,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    writes = [pk(env, "secrets", "write", f"v:side{i}", input=b"side") for i in range(3)]
    assert importer.stderr is not None
    err = importer.stderr.read()
    importer.stderr.close()
    assert importer.wait(timeout=120) == 0, err
    assert all(w.returncode == 0 for w in writes)
    assert len(log_ids(env, "v")) == before + 4
    assert _imported(env, "bulk") == FILES
    assert_node_whole(env)
