"""Hostile packs over stock `git push` (T-GIT-06 bombs, T-GIT-08 broken packs): a real `git`
client pushes to a real agent over real ssh, and only the pack bytes are the attacker's.

git builds its own pack, so its ssh is a small wrapper (``SWAP``) that passes git's ref-update
commands through unchanged and sends a pack written here (``Pack``: header, object headers,
zlib streams, OFS_DELTA and REF_DELTA entries, trailer) in place of git's; git reads the agent's
answer itself. For each pack: git reports the push refused, the vault's history is unchanged
(`pk vaults log` on the owner), the agent still serves a stock `git clone`, and its peak memory
(VmHWM, reset before the push) grows by less than ``RSS_BOUND``: the inflate budget of
sync/packin.py (256 MiB), one object in the making (64 MiB) and some room. No timing is
asserted. One push lands: a signed commit whose pack
also carries objects no commit names, of which nothing is stored.
"""

from __future__ import annotations

import functools
import hashlib
import json
import os
import shutil
import subprocess
import sys
import zlib
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest

from polykey.crypto.signing import SigningKey
from polykey.node import Node
from polykey.vaults.objects import objects_ns
from tests.sync.test_tgit_corpus import PUSHER, READER, Owner, owner
from tests.sync.test_three_agents import agent_pid

__all__ = ["owner"]  # the module's agent: `work`, which PUSHER may push to and READER clone

pytestmark = pytest.mark.skipif(
    shutil.which("git") is None
    or shutil.which("ssh") is None
    or not Path("/proc/self/clear_refs").exists(),
    reason="git, ssh and Linux's /proc are needed",
)

KiB, MiB, GiB = 1 << 10, 1 << 20, 1 << 30
# What one refused push may add to the agent's peak memory: everything it inflates (256 MiB at
# most), one object being made (64 MiB at most), and some room.
RSS_BOUND = 384 * MiB
BLOB, TAG, OFS_DELTA, REF_DELTA = 3, 4, 6, 7


# --- a pack builder ---------------------------------------------------------------------------


def object_header(kind: int, size: int) -> bytes:
    """git's entry header: the type in bits 4-6 of the first byte, the size in base 128
    (little-endian) starting with the first byte's low 4 bits."""
    out = bytearray([(kind << 4) | (size & 0x0F)])
    size >>= 4
    while size:
        out[-1] |= 0x80
        out.append(size & 0x7F)
        size >>= 7
    return bytes(out)


def varint(n: int) -> bytes:
    """A delta's base and result sizes: base 128, little-endian."""
    out = bytearray()
    while True:
        out.append((n & 0x7F) | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def ofs(back: int) -> bytes:
    """An OFS_DELTA's distance back to its base (git's big-endian, offset-by-one encoding)."""
    out = [back & 0x7F]
    back >>= 7
    while back:
        back -= 1
        out.insert(0, 0x80 | (back & 0x7F))
        back >>= 7
    return bytes(out)


def copy(offset: int, size: int) -> bytes:
    """A delta instruction: copy ``size`` bytes at ``offset`` of the base (zero bytes omitted;
    a size of 0 means 0x10000)."""
    cmd, args = 0x80, bytearray()
    for i in range(4):
        if byte := (offset >> (8 * i)) & 0xFF:
            cmd |= 1 << i
            args.append(byte)
    for i in range(3):
        if byte := (size >> (8 * i)) & 0xFF:
            cmd |= 1 << (4 + i)
            args.append(byte)
    return bytes([cmd]) + args


def insert(data: bytes) -> bytes:
    """A delta instruction: insert ``data`` (1 to 127 bytes)."""
    assert 0 < len(data) < 0x80
    return bytes([len(data)]) + data


def delta(source: int, result: int, *instructions: bytes) -> bytes:
    return varint(source) + varint(result) + b"".join(instructions)


def blob_id(data: bytes) -> bytes:
    return hashlib.sha1(b"blob %d\x00" % len(data) + data).digest()


@functools.cache
def zeros(mib: int) -> bytes:
    """A zlib stream of ``mib`` MiB of zero bytes, about 1 KiB per MiB, built without
    compressing them all: after a full flush deflate restarts, so one block repeats."""
    squeeze = zlib.compressobj(9, zlib.DEFLATED, -15)
    block = squeeze.compress(bytes(MiB)) + squeeze.flush(zlib.Z_FULL_FLUSH)
    adler = (((mib * MiB) % 65521) << 16) | 1
    return b"\x78\xda" + block * mib + b"\x03\x00" + adler.to_bytes(4, "big")


class Pack:
    """Entries appended in order; ``bytes()`` frames them. Each method returns the entry's
    offset in the pack (what an OFS_DELTA counts back from)."""

    def __init__(self) -> None:
        self.body = bytearray()
        self.n = 0

    def entry(self, header: bytes, stream: bytes) -> int:
        at = 12 + len(self.body)
        self.body += header + stream
        self.n += 1
        return at

    def whole(self, kind: int, data: bytes, size: int | None = None) -> int:
        size = len(data) if size is None else size
        return self.entry(object_header(kind, size), zlib.compress(data, 9))

    def ofs_delta(self, base: int, instructions: bytes, *, back: int | None = None) -> int:
        at = 12 + len(self.body)
        header = object_header(OFS_DELTA, len(instructions))
        return self.entry(
            header + ofs(at - base if back is None else back), zlib.compress(instructions)
        )

    def ref_delta(self, base: bytes, instructions: bytes) -> int:
        header = object_header(REF_DELTA, len(instructions)) + base
        return self.entry(header, zlib.compress(instructions))

    def bytes(
        self, *, count: int | None = None, garbage: bytes = b"", trailer: bytes | None = None
    ) -> bytes:
        """The pack declaring ``count`` objects (default: those added), ``garbage`` after the
        last entry, and ``trailer`` (default: the SHA-1 of everything before it)."""
        data = (
            b"PACK"
            + (2).to_bytes(4, "big")
            + (self.n if count is None else count).to_bytes(4, "big")
        )
        data += self.body + garbage
        return data + (hashlib.sha1(data).digest() if trailer is None else trailer)


BASE = b"".join(b"%04d|" % i for i in range(205))[: 1 * KiB]  # the 1 KiB blob deltas rest on


def on_base(*build: Callable[[Pack, int], object]) -> bytes:
    pack = Pack()
    at = pack.whole(BLOB, BASE)
    for step in build:
        step(pack, at)
    return pack.bytes()


# --- the packs --------------------------------------------------------------------------------


def ofs_chain(depth: int, grow: int = 0) -> bytes:
    """BASE, then ``depth`` OFS_DELTAs each resting on the entry before it; each copies all
    of its base and inserts ``grow`` more bytes."""
    pack = Pack()
    at, size = pack.whole(BLOB, BASE), len(BASE)
    for i in range(depth):
        steps = [copy(o, min(0x10000, size - o)) for o in range(0, size, 0x10000)]
        steps += [insert((b"%08d" % i * 16)[:grow])] if grow else []
        at = pack.ofs_delta(at, delta(size, size + grow, *steps))
        size += grow
    return pack.bytes()


def ref_chain_deepest_first(depth: int) -> bytes:
    """BASE, then ``depth`` REF_DELTAs each naming the previous result by id, sent deepest
    first: every base is later in the pack than the delta on it."""
    results = [BASE] + [BASE[:1000] + b"%024d" % i for i in range(depth)]
    pack = Pack()
    for i in range(depth, 0, -1):
        made = delta(KiB, KiB, copy(0, 1000), insert(b"%024d" % (i - 1)))
        pack.ref_delta(blob_id(results[i - 1]), made)
    pack.whole(BLOB, BASE)
    return pack.bytes()


def on_itself() -> bytes:
    """A REF_DELTA whose base is its own result (it only inserts, so its result is known)."""
    made = b"made by inserting only"
    pack = Pack()
    pack.ref_delta(blob_id(made), delta(len(made), len(made), insert(made)))
    return pack.bytes()


def cycle() -> bytes:
    """Two REF_DELTAs, each resting on the other's result."""
    one, two = b"the first result", b"the second result!"
    pack = Pack()
    pack.ref_delta(blob_id(two), delta(len(two), len(one), insert(one)))
    pack.ref_delta(blob_id(one), delta(len(one), len(two), insert(two)))
    return pack.bytes()


def ofs_at(back: Callable[[int], int]) -> bytes:
    """BASE, then an OFS_DELTA whose distance back is ``back(its own offset)``."""
    pack = Pack()
    pack.whole(BLOB, BASE)
    at = 12 + len(pack.body)
    pack.ofs_delta(0, delta(len(BASE), len(BASE), copy(0, len(BASE))), back=back(at))
    return pack.bytes()


def copies_to(result: int, source: int = len(BASE)) -> bytes:
    """A delta on BASE declaring ``result`` bytes and made of 1 KiB copies (a 2-byte
    instruction each): 1 GiB is a 2 MiB delta, a few KiB compressed."""
    return delta(source, result, copy(0, 1 * KiB) * (result // KiB))


def bomb_deltas(each: int, count: int) -> bytes:
    """BASE, then ``count`` deltas on it, each expanding to ``each`` bytes."""
    pack = Pack()
    at = pack.whole(BLOB, BASE)
    instructions = copies_to(each)
    for _ in range(count):
        pack.ofs_delta(at, instructions)
    return pack.bytes()


def one(header: bytes, data: bytes) -> bytes:
    """A pack of one entry: ``header``, then ``data``."""
    pack = Pack()
    pack.entry(header, data)
    return pack.bytes()


def stream(size: int, data: bytes) -> bytes:
    """One blob whose header says ``size`` and whose zlib stream is ``data``."""
    return one(object_header(BLOB, size), data)


def small_pack() -> Pack:
    pack = Pack()
    pack.whole(BLOB, BASE)
    pack.whole(BLOB, b"a second blob")
    return pack


DELTA = "rests on an object that is not there"
PACKS = [
    # T-GIT-06: deep chains, and deltas that expand
    pytest.param(lambda: ofs_chain(10_000), "the new head is missing", id="ofs-chain-10000"),
    pytest.param(
        lambda: ref_chain_deepest_first(10_000), "the new head is missing", id="ref-chain-10000"
    ),
    pytest.param(
        lambda: ofs_chain(10_000, grow=127), "inflates to too much data", id="growing-chain-10000"
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, copies_to(GiB))),
        "too large",
        id="delta-1KiB-to-1GiB",
    ),
    pytest.param(
        lambda: bomb_deltas(200 * MiB, 2),
        "too large",
        id="two-deltas-of-200MiB",
    ),
    pytest.param(
        lambda: bomb_deltas(100 * MiB, 3),
        "too large",
        id="three-deltas-of-100MiB",
    ),
    pytest.param(
        lambda: stream(200 * MiB, zeros(200)),
        "too large",
        id="blob-of-200MiB-in-200KiB",
    ),
    # each object under the per-object limit: they are expanded, and held once each
    pytest.param(
        lambda: bomb_deltas(60 * MiB, 3), "the new head is missing", id="three-deltas-of-60MiB"
    ),
    pytest.param(
        lambda: bomb_deltas(60 * MiB, 5), "inflates to too much data", id="five-deltas-of-60MiB"
    ),
    pytest.param(
        lambda: stream(60 * MiB, zeros(60)), "the new head is missing", id="blob-of-60MiB-in-60KiB"
    ),
    # T-GIT-06: zlib bombs, and streams that disagree with their header
    pytest.param(lambda: stream(GiB, zeros(1)[: 4 * KiB]), "too large", id="header-says-1GiB"),
    pytest.param(lambda: stream(10 * GiB, zeros(1)), "too large", id="header-says-10GiB"),
    pytest.param(
        lambda: stream(KiB, zeros(1024)),
        "larger than its header says",
        id="1KiB-header-1GiB-stream",
    ),
    pytest.param(
        lambda: stream(60 * MiB, zeros(1024)),
        "larger than its header says",
        id="60MiB-header-1GiB-stream",
    ),
    pytest.param(
        lambda: stream(2 * KiB, zlib.compress(BASE)),
        "smaller than its header says",
        id="stream-smaller-than-header",
    ),
    pytest.param(
        lambda: stream(KiB, b"\x78\x9c" + b"\xff" * 64), "not valid zlib data", id="not-zlib"
    ),
    # T-GIT-08: deltas whose base is not there, or is themselves
    pytest.param(on_itself, DELTA, id="ref-delta-on-itself"),
    pytest.param(cycle, DELTA, id="ref-delta-cycle"),
    pytest.param(lambda: ofs_at(lambda at: 0), "outside the pack", id="ofs-delta-on-itself"),
    pytest.param(lambda: ofs_at(lambda at: at + 1), "outside the pack", id="ofs-before-the-pack"),
    pytest.param(lambda: ofs_at(lambda at: 1 << 62), "outside the pack", id="ofs-2-to-the-62"),
    pytest.param(lambda: ofs_at(lambda at: at - 4), DELTA, id="ofs-into-the-header"),
    pytest.param(lambda: ofs_at(lambda at: at - 14), DELTA, id="ofs-into-an-entry"),
    # T-GIT-08: delta instructions outside their bounds
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, delta(KiB, 100, copy(1000, 100)))),
        "copies outside its bounds",
        id="copy-past-the-base",
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, delta(KiB, 100, copy(0xFFFFFFFF, 100)))),
        "copies outside its bounds",
        id="copy-at-4GiB",
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, delta(KiB, 2000, copy(0, KiB)))),
        "does not make the size it declares",
        id="result-smaller-than-declared",
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, delta(KiB, 10, copy(0, KiB)))),
        "copies outside its bounds",
        id="result-larger-than-declared",
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, delta(KiB, 5, insert(b"x" * 9)))),
        "inserts outside its bounds",
        id="insert-larger-than-declared",
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, delta(7, 1, insert(b"x")))),
        "does not fit its base",
        id="wrong-base-size",
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, delta(KiB, 1, b"\x00"))),
        "invalid instruction",
        id="instruction-zero",
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.ofs_delta(at, delta(KiB, 1, b"\x9f\x01"))),
        "truncated",
        id="instruction-cut",
    ),
    # T-GIT-08: the pack's frame
    pytest.param(
        lambda: small_pack().bytes(garbage=b"garbage after the last object"),
        "checksum",
        id="garbage-before-the-trailer",
    ),
    pytest.param(lambda: small_pack().bytes(trailer=bytes(20)), "checksum", id="wrong-checksum"),
    pytest.param(lambda: small_pack().bytes()[:-20], "ended early", id="no-trailer"),
    pytest.param(  # the trailer is read as a third entry, whatever its bytes make of it
        lambda: small_pack().bytes(count=3), None, id="count-above-objects-sent"
    ),
    pytest.param(lambda: small_pack().bytes(count=1), "checksum", id="count-below-objects-sent"),
    pytest.param(
        lambda: small_pack().bytes(count=2**32 - 1),
        "too many objects",
        id="count-2-to-the-32-minus-1",
    ),
    pytest.param(
        lambda: one(bytes([0x80 | BLOB << 4]) + b"\xff" * 9 + b"\x01", zlib.compress(b"x")),
        "malformed",
        id="endless-size-varint",
    ),
    pytest.param(
        lambda: one(object_header(5, 1), zlib.compress(b"x")), "unknown type", id="type-5"
    ),
    pytest.param(
        lambda: on_base(lambda p, at: p.whole(TAG, b"object " + b"0" * 40 + b"\n")),
        "unknown or forbidden type",
        id="tag-object",
    ),
]


# --- stock git, with a pack of ours in place of git's ----------------------------------------

SWAP = r"""
import json, os, subprocess, sys

ssh = subprocess.Popen(["ssh", *json.loads(os.environ["PK_TEST_SSH"]), *sys.argv[1:]],
                       stdin=subprocess.PIPE)
read = sys.stdin.buffer.read
try:
    while True:  # git's commands, untouched, up to the flush that ends them
        size = read(4)
        ssh.stdin.write(size)
        if len(size) < 4 or size == b"0000":
            break
        ssh.stdin.write(read(int(size, 16) - 4))
    with open(os.environ["PK_TEST_PACK"], "rb") as f:  # then our pack, not git's
        ssh.stdin.write(f.read())
    ssh.stdin.close()
except (BrokenPipeError, ValueError):
    pass
while read(65536):  # git's own pack goes nowhere
    pass
sys.exit(ssh.wait())
"""


def write_key(path: Path, key: SigningKey) -> Path:
    path.write_bytes(key.openssh_private_pem())
    path.chmod(0o600)
    return path


SSH_OPTIONS = ["IdentitiesOnly=yes", "BatchMode=yes", "StrictHostKeyChecking=no"]
SSH_OPTIONS += ["UserKnownHostsFile=/dev/null", "LogLevel=ERROR"]


@dataclass
class StockGit:
    """Stock git in its own HOME, over stock ssh with a node key, to the owner's agent; its
    pushes go through SWAP, sending ``pack`` in place of git's when one is given."""

    home: Path
    port: int
    key: Path

    @property
    def work(self) -> Path:
        return self.home / "work"

    def ssh(self) -> list[str]:
        return ["-i", str(self.key), *(f"-o{option}" for option in SSH_OPTIONS)]

    def run(self, *args: str, **extra: str) -> subprocess.CompletedProcess[str]:
        env = {
            "PATH": "/usr/bin:/bin",
            "HOME": str(self.home),
            "GIT_CONFIG_NOSYSTEM": "1",
            "GIT_TERMINAL_PROMPT": "0",
            "GIT_SSH_COMMAND": "ssh " + " ".join(self.ssh()),
            **extra,
        }
        cwd = self.work if self.work.exists() else self.home
        return subprocess.run(
            ["git", *args], cwd=cwd, env=env, capture_output=True, text=True, timeout=120
        )

    def ok(self, *args: str) -> str:
        r = self.run(*args)
        assert r.returncode == 0, r.stderr
        return r.stdout

    def clone(self) -> subprocess.CompletedProcess[str]:
        return self.run("clone", "-q", f"ssh://pk@127.0.0.1:{self.port}/work", str(self.work))

    def commit(self, path: str, content: str, *, sign: bool) -> None:
        for name, value in [
            ("user.name", "pusher"),
            ("user.email", "pusher@example.org"),
            ("gpg.format", "ssh"),
            ("user.signingKey", str(self.key)),
        ]:
            self.ok("config", name, value)
        (self.work / path).write_text(content)
        self.ok("add", path)
        self.ok("commit", "-q", "-m", f"Add {path}.", "--gpg-sign" if sign else "--no-gpg-sign")

    def push(self, pack: bytes) -> subprocess.CompletedProcess[str]:
        """`git push origin main`, carrying ``pack`` instead of the pack git built."""
        swap, packed = self.home / "swap.py", self.home / "crafted.pack"
        swap.write_text(SWAP)
        packed.write_bytes(pack)
        return self.run(
            "push",
            "origin",
            "main",
            GIT_SSH_COMMAND=f"{sys.executable} {swap}",
            GIT_SSH_VARIANT="ssh",
            PK_TEST_SSH=json.dumps(self.ssh()),
            PK_TEST_PACK=str(packed),
        )


@pytest.fixture(scope="module")
def pusher(owner: Owner, tmp_path_factory: pytest.TempPathFactory) -> StockGit:
    """A stock git clone of `work` by PUSHER, one unsigned commit ahead (never landing)."""
    home = tmp_path_factory.mktemp("pusher")
    git = StockGit(home, owner.port, write_key(home / "pusher.key", PUSHER))
    cloned = git.clone()
    assert cloned.returncode == 0, cloned.stderr
    git.commit("new", "a secret git would push\n", sign=False)
    return git


@pytest.fixture(scope="module")
def reader(owner: Owner, tmp_path_factory: pytest.TempPathFactory) -> StockGit:
    home = tmp_path_factory.mktemp("reader")
    return StockGit(home, owner.port, write_key(home / "reader.key", READER))


def status(pid: int, field: str) -> int:
    """A field of /proc/PID/status, in bytes."""
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith(field + ":"):
            return int(line.split()[1]) * KiB
    raise AssertionError(f"no {field}")


@pytest.mark.parametrize(("make", "reason"), PACKS)
def test_a_hostile_pack_over_stock_git_push_is_refused_and_the_agent_keeps_serving(
    owner: Owner,
    pusher: StockGit,
    reader: StockGit,
    make: Callable[[], bytes],
    reason: str | None,
) -> None:
    pack = make()
    pid = agent_pid(owner.env)
    assert pid is not None
    history = owner.pk("vaults", "log", "work", "--format", "json")
    Path(f"/proc/{pid}/clear_refs").write_text("5")  # the peak is measured from here
    start = status(pid, "VmRSS")
    result = pusher.push(pack)
    grew = status(pid, "VmHWM") - start
    assert result.returncode != 0, result.stderr
    assert "[remote rejected] main -> main" in result.stderr, result.stderr
    assert (reason or "remote unpack failed") in result.stderr, result.stderr
    assert owner.pk("vaults", "log", "work", "--format", "json") == history
    shutil.rmtree(reader.work, ignore_errors=True)
    served = reader.clone()
    assert served.returncode == 0, served.stderr
    assert (reader.work / "db" / "password").read_bytes() == b"owner's"
    assert grew < RSS_BOUND, f"the agent's peak memory grew by {grew // MiB} MiB"


def stored(owner: Owner) -> int:
    with Node.open(owner.path, b"owner pw", allow_weak=True) as node:  # beside the agent
        return len(node.store.keys(objects_ns(node.vaults.info("work").id)))


def test_a_signed_push_carrying_objects_beyond_its_history_stores_only_its_history(
    owner: Owner, tmp_path: Path
) -> None:
    """git's own objects for a signed commit, sent whole, and 200 blobs and a tree that no
    commit names: the push lands, and only what its history reaches is stored."""
    git = StockGit(tmp_path, owner.port, write_key(tmp_path / "pusher.key", PUSHER))
    assert git.clone().returncode == 0
    git.commit("extra", "pushed with junk\n", sign=True)
    pack = Pack()
    wanted = [
        line.split()[0] for line in git.ok("rev-list", "--objects", "@{u}..HEAD").splitlines()
    ]
    for sha in wanted:
        kind = git.ok("cat-file", "-t", sha).strip()
        body = subprocess.run(
            ["git", "-C", str(git.work), "cat-file", kind, sha], capture_output=True, check=True
        ).stdout
        pack.whole({"commit": 1, "tree": 2, "blob": BLOB}[kind], body)
    junk = [os.urandom(512) for _ in range(200)]
    for data in junk:
        pack.whole(BLOB, data)
    listing = b"".join(b"100644 f%03d\x00" % i + blob_id(data) for i, data in enumerate(junk[:5]))
    pack.whole(2, listing)
    before = stored(owner)
    result = git.push(pack.bytes())
    assert result.returncode == 0, result.stderr
    assert owner.pk("secrets", "cat", "work:extra") == "pushed with junk\n"
    assert stored(owner) - before == len(wanted), "objects no commit names were stored"
