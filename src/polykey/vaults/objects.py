"""Git objects of a vault, kept as write-once sealed records of the node file.

A stored object is ``u8 type number ‖ raw object content``, keyed by its raw 20-byte SHA-1 in the
namespace ``vault/<id>/objects``. The AEAD already authenticates each record, so local reads skip
re-hashing; `check` re-hashes every object. Parsed trees and commits (never blobs, which are
secrets) are cached by id, which is safe because objects never change.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Iterator
from typing import Protocol, cast

from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.errors import NodeDamaged
from polykey.store.nodefile import Transaction
from polykey.store.records import Namespace
from polykey.vaults.paths import objects_ns, refs_ns

TYPE_NUMS = {Commit.type_num, Tree.type_num, Blob.type_num, 4}
__all__ = [
    "CHUNKED_BLOB",
    "CHUNK_BYTES",
    "OBJECT_KEY_BYTES",
    "ObjectCache",
    "RecordSource",
    "VaultObjects",
    "chunk_key",
    "encode",
    "objects_ns",
    "parse",
    "refs_ns",
]

CACHE_SIZE = 4096
BLOB_TYPE = bytes([Blob.type_num])
CHUNKED_BLOB = 0x80 | Blob.type_num
CHUNK_BYTES = 1 << 20
OBJECT_KEY_BYTES = 20


def chunk_key(key: bytes, index: int) -> bytes:
    """The record key of part ``index`` of a large blob (25 bytes; object keys are 20)."""
    return key + b"#" + struct.pack(">I", index)


def _chunk_header(raw: bytes, sha: bytes) -> tuple[int, int]:
    if len(raw) != 13:
        raise NodeDamaged(f"the part list of blob {sha.decode()} is malformed")
    count, total = struct.unpack(">IQ", raw[1:])
    if count != (total + CHUNK_BYTES - 1) // CHUNK_BYTES:
        raise NodeDamaged(f"the part list of blob {sha.decode()} is inconsistent")
    return count, total


class RecordSource(Protocol):
    def get(self, ns: Namespace, key: bytes) -> bytes | None: ...


class ObjectCache:
    """Parsed trees and commits by (vault, id), least recently used out first. Safe to share
    between threads (the agent's node thread, its git threads and its peer loop read it)."""

    def __init__(self, size: int = CACHE_SIZE) -> None:
        self._size = size
        self._items: OrderedDict[tuple[str, bytes], ShaFile] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: tuple[str, bytes]) -> ShaFile | None:
        with self._lock:
            obj = self._items.get(key)
            if obj is not None:
                self._items.move_to_end(key)
            return obj

    def put(self, key: tuple[str, bytes], obj: ShaFile) -> None:
        if isinstance(obj, Blob):
            return
        with self._lock:
            self._items[key] = obj
            if len(self._items) > self._size:
                self._items.popitem(last=False)


class VaultObjects:
    """Read (and, inside a write transaction, add) the git objects of one vault."""

    def __init__(self, source: RecordSource, vault_id: str, cache: ObjectCache) -> None:
        self.source = source
        self.vault_id = vault_id
        self.ns = objects_ns(vault_id)
        self.cache = cache

    def get(self, sha: bytes) -> ShaFile:
        """The object with this hex id; NodeDamaged if it is missing (a vault is closed)."""
        obj = self.cache.get((self.vault_id, sha))
        if obj is not None:
            return obj
        raw = self.source.get(self.ns, binascii.unhexlify(sha))
        if raw is None:
            raise NodeDamaged(f"git object {sha.decode()} of vault {self.vault_id} is missing")
        if raw[0] == CHUNKED_BLOB:
            raw = BLOB_TYPE + self.get_blob_data(sha)
        obj = parse(raw, sha)
        self.cache.put((self.vault_id, sha), obj)
        return obj

    def get_tree(self, sha: bytes) -> Tree:
        obj = self.get(sha)
        if not isinstance(obj, Tree):
            raise NodeDamaged(f"object {sha.decode()} of vault {self.vault_id} is not a tree")
        return obj

    def get_commit(self, sha: bytes) -> Commit:
        obj = self.get(sha)
        if not isinstance(obj, Commit):
            raise NodeDamaged(f"object {sha.decode()} of vault {self.vault_id} is not a commit")
        return obj

    def get_blob_data(self, sha: bytes) -> bytes:
        return b"".join(self.iter_blob(sha))

    def iter_blob(self, sha: bytes) -> Iterator[bytes]:
        """A blob's content in parts (one part unless it is larger than 1 MiB)."""
        key = binascii.unhexlify(sha)
        raw = self.source.get(self.ns, key)
        if raw is None or raw[0] not in (Blob.type_num, CHUNKED_BLOB):
            raise NodeDamaged(f"blob {sha.decode()} of vault {self.vault_id} is missing")
        if raw[0] == Blob.type_num:
            yield raw[1:]
            return
        count, total = _chunk_header(raw, sha)
        seen = 0
        for index in range(count):
            chunk = self.source.get(self.ns, chunk_key(key, index))
            if chunk is None or len(chunk) != min(CHUNK_BYTES, total - seen):
                raise NodeDamaged(f"part {index} of blob {sha.decode()} is missing or damaged")
            seen += len(chunk)
            yield chunk

    def blob_size(self, sha: bytes) -> int:
        return len(self.get_blob_data(sha))

    def add(self, obj: ShaFile) -> bytes:
        """Store an object (inside a write transaction); return its hex id."""
        if not isinstance(self.source, Transaction):
            raise RuntimeError("objects are added inside a write transaction")
        sha: bytes = obj.id
        self.source.put(self.ns, binascii.unhexlify(sha), encode(obj))
        self.cache.put((self.vault_id, sha), obj)
        return sha

    def add_blob(self, data: bytes) -> bytes:
        """Store a secret's content as a blob without copying it more than sealing needs."""
        if not isinstance(self.source, Transaction):
            raise RuntimeError("objects are added inside a write transaction")
        digest = hashlib.sha1(b"blob %d\x00" % len(data))  # noqa: S324 - git's object id
        digest.update(data)
        key = digest.digest()
        if len(data) <= CHUNK_BYTES:
            self.source.put_parts(self.ns, key, (BLOB_TYPE, data))
        else:  # large secrets: parts of 1 MiB, so sealing never copies the whole secret
            view = memoryview(data)
            count = (len(data) + CHUNK_BYTES - 1) // CHUNK_BYTES
            for index in range(count):
                part = view[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
                self.source.put_parts(self.ns, chunk_key(key, index), (part,))
            header = bytes([CHUNKED_BLOB]) + struct.pack(">IQ", count, len(data))
            self.source.put(self.ns, key, header)
        return digest.hexdigest().encode("ascii")


def encode(obj: ShaFile) -> bytes:
    return bytes([obj.type_num]) + obj.as_raw_string()


def parse(raw: bytes, sha: bytes | None = None, *, verify: bool = False) -> ShaFile:
    if not raw or raw[0] not in TYPE_NUMS:
        raise NodeDamaged("a git object has an unknown type")
    try:
        oid = cast(ObjectID, sha) if sha is not None else None
        if verify:
            return ShaFile.from_raw_string(raw[0], raw[1:], verify_sha=oid)
        return ShaFile.from_raw_string(raw[0], raw[1:], sha=oid)
    except Exception as exc:  # dulwich raises several types for malformed objects
        raise NodeDamaged(f"git object {sha!r} is malformed ({type(exc).__name__})") from None
