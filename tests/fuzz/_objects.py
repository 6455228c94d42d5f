"""Git objects built from a fuzzer's bytes: what a hostile peer could send (blobs, trees with any
names and modes, commits naming anything, signed by an allowed key, a stranger, nobody, or with
a signature made of the input), and raw objects of any type byte and body.

A fuzzer cannot forge an Ed25519 signature, so commits are signed here when the input asks for
it: that is what lets it reach the checks behind the signature (trees, depth, ancestry).
"""

from __future__ import annotations

import base64
import contextlib

from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.crypto import sshsig
from polykey.crypto.signing import SigningKey
from tests.fuzz._bytes import Bytes

OWNER = SigningKey(bytes(range(32)))  # allowed to write
PEER = SigningKey(bytes(range(1, 33)))  # allowed to write too (granted push)
STRANGER = SigningKey(bytes(range(2, 34)))  # not allowed
KEYS = (OWNER, PEER, STRANGER)
MODES = (0o100644, 0o040000, 0o100755, 0o120000, 0o160000, 0o100664, 0o644, 0)
NAMES = (b"password", b"db", b".git", b"..", b"Key", b"key", b".polykey-tags", b"a/b", b"\xff")
MAX_OPS = 24


def raw_of(obj: ShaFile) -> bytes:
    return bytes([obj.type_num]) + obj.as_raw_string()


def sign(commit: Commit, key: SigningKey) -> None:
    commit.gpgsig = sshsig.sign(key, commit.raw_without_sig(), "git").encode()


def _armor(blob: bytes) -> bytes:
    text = base64.b64encode(blob).decode("ascii")
    lines = [text[i : i + 70] for i in range(0, len(text), 70)]
    return "\n".join([sshsig.BEGIN, *lines, sshsig.END]).encode() + b"\n"


class Builder:
    """Objects made one operation at a time; ids of earlier objects (and of ``anchors``, the
    objects the receiver already holds, the newest last) can be named by later ones."""

    def __init__(self, b: Bytes, anchors: dict[int, list[bytes]] | None = None) -> None:
        self.b = b
        self.raws: list[bytes] = []
        self.ids: dict[int, list[bytes]] = {1: [], 2: [], 3: []}
        for kind, shas in (anchors or {}).items():
            self.ids[kind] = list(shas)

    def pick(self, kind: int) -> bytes:
        """An id: 0 names the newest object of ``kind``, 1 the one before, ...; from 0xF0, an
        object of any kind; 0xFF, an id read from the input (most likely of nothing)."""
        choice = self.b.u8()
        pool = self.ids[kind] if choice < 0xF0 else [i for ids in self.ids.values() for i in ids]
        if not pool or choice == 0xFF:
            return self.b.take(20).hex().encode().ljust(40, b"0")
        return pool[-1 - choice % len(pool)]

    def name(self) -> bytes:
        choice = self.b.u8()
        if choice < len(NAMES):
            return NAMES[choice]
        return self.b.small() or b"x"

    def add(self, raw: bytes) -> bytes:
        self.raws.append(raw)
        with contextlib.suppress(Exception):
            obj = ShaFile.from_raw_string(raw[0], raw[1:])
            self.ids.setdefault(obj.type_num, []).append(obj.id)
            return bytes(obj.id)
        return b"0" * 40

    def blob(self) -> None:
        self.add(raw_of(Blob.from_string(self.b.small())))

    def tree(self) -> None:
        tree = Tree()
        for _ in range(self.b.u8() % 8):
            mode = MODES[self.b.u8() % len(MODES)]
            target = self.pick(2 if mode == 0o040000 else 3)
            with contextlib.suppress(Exception):
                tree.add(self.name(), mode, ObjectID(target))
        self.add(raw_of(tree))

    def commit(self) -> None:
        c = Commit()
        c.tree = ObjectID(self.pick(2))
        c.parents = [ObjectID(self.pick(1)) for _ in range(self.b.u8() % 3)]
        c.author = c.committer = b"node <node>"
        c.author_time = c.commit_time = 1_700_000_000 + self.b.u8()
        c.author_timezone = c.commit_timezone = 0
        c.message = self.b.small()
        self.signature(c)
        self.add(raw_of(c))

    def signature(self, c: Commit) -> None:
        how = self.b.u8() % 6
        if how < len(KEYS):
            sign(c, KEYS[how])
        elif how == 3:
            c.gpgsig = _armor(self.b.small())  # a signature blob made of the input
        elif how == 4:
            c.gpgsig = self.b.small() or None  # any bytes as the signature header
        # 5: unsigned

    def raw(self) -> None:
        """Any type byte and body; a body dulwich reads as a commit may be signed again."""
        kind, body = self.b.u8() % 8, self.b.chunk()
        resign = self.b.u8() % 4
        if kind == 1 and resign < len(KEYS):
            with contextlib.suppress(Exception):
                c = ShaFile.from_raw_string(1, body)
                assert isinstance(c, Commit)
                sign(c, KEYS[resign])
                body = c.as_raw_string()
        self.add(bytes([kind]) + body)

    def nest(self) -> None:
        """The newest tree inside ``n`` folders, one in the other (deep trees)."""
        inner = self.pick(2)
        for _ in range(self.b.u8()):
            tree = Tree()
            tree.add(b"d", 0o040000, ObjectID(inner))
            inner = self.add(raw_of(tree))

    def build(self) -> tuple[list[bytes], bytes]:
        """(objects as ``u8 type ‖ raw``, the head to offer)."""
        ops = (self.blob, self.tree, self.commit, self.raw, self.nest)
        for _ in range(self.b.u8() % MAX_OPS):
            if not self.b.left():
                break
            ops[self.b.u8() % len(ops)]()
        head = self.ids[1][-1] if self.ids[1] else b"0" * 40
        if self.b.u8() == 0xFF:
            head = self.pick(1)
        order = self.b.u8()
        if order % 2:
            self.raws.reverse()
        return self.raws, head
