"""Git objects of a vault, kept as write-once sealed records of the node file.

A stored object is ``u8 type number ‖ raw object content``, keyed by its raw 20-byte SHA-1 in the
namespace ``vault/<id>/objects``. The AEAD already authenticates each record, so local reads skip
re-hashing; `check` re-hashes every object. Parsed trees and commits (never blobs, which are
secrets) are cached by id, which is safe because objects never change. ``object_id`` is the one
place that computes a git object id; vaults/store.py shows these objects to dulwich.
"""

from __future__ import annotations

import binascii
import hashlib
import struct
import threading
from collections import OrderedDict
from collections.abc import Callable, Iterable, Iterator
from typing import Protocol, TypeVar, cast

from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree

from polykey.errors import NodeDamaged
from polykey.store.nodefile import Transaction
from polykey.store.records import Namespace
from polykey.vaults.errors import BrokenHistory
from polykey.vaults.paths import objects_ns, refs_ns

TYPE_NUMS = {Commit.type_num, Tree.type_num, Blob.type_num, 4}
TYPE_NAMES = {Commit.type_num: "commit", Tree.type_num: "tree", Blob.type_num: "blob", 4: "tag"}
__all__ = [
    "CHUNKED_BLOB",
    "CHUNK_BYTES",
    "OBJECT_KEY_BYTES",
    "TYPE_NAMES",
    "ObjectCache",
    "ObjectMissing",
    "RecordSource",
    "VaultObjects",
    "chunk_key",
    "encode",
    "object_id",
    "objects_ns",
    "parse",
    "refs_ns",
]

CACHE_SIZE = 4096
CACHE_ENTRIES = 1 << 18
"""Tree entries the cache holds in all: a parsed tree of 100,000 entries takes about 9 MB, and
each write into a flat folder makes a new one (CACHE_SIZE alone would keep 4,096 of them)."""
BLOB_TYPE = bytes([Blob.type_num])
CHUNKED_BLOB = 0x80 | Blob.type_num
CHUNK_BYTES = 1 << 20
OBJECT_KEY_BYTES = 20


_HEADER_NAMES = {num: name.encode("ascii") for num, name in TYPE_NAMES.items()}


def object_id(
    type_num: int, body: bytes | memoryview | Iterable[bytes | memoryview], size: int = -1
) -> bytes:
    """The hex id git gives an object: SHA-1 of ``"TYPE SIZE\\0"`` then the body. A body given
    in parts (a large blob) is hashed part by part, never joined; ``size`` is then its length."""
    name = _HEADER_NAMES.get(type_num)
    if name is None:
        raise ValueError(f"git has no object type {type_num}")
    parts: Iterable[bytes | memoryview]
    if isinstance(body, bytes | bytearray | memoryview):
        parts, size = (body,), memoryview(body).nbytes
    elif size < 0:
        raise ValueError("an object id of a body in parts needs its size")
    else:
        parts = body
    digest = hashlib.sha1(b"%s %d\x00" % (name, size))  # noqa: S324 - git's object id
    seen = 0
    for part in parts:
        digest.update(part)
        seen += memoryview(part).nbytes
    if seen != size:
        raise ValueError("the parts of an object do not add up to its size")
    return digest.hexdigest().encode("ascii")


class ObjectMissing(NodeDamaged, KeyError):
    """The node file is damaged."""

    # A KeyError too: dulwich asks an object store for what it may not hold and expects one.
    def __str__(self) -> str:
        return self.message


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


M = TypeVar("M")


class ObjectCache:
    """Parsed trees and commits by (vault, id), least recently used out first, at most ``size``
    objects and ``entries`` tree entries in all (the newest object stays, however large). Safe
    to share between threads (the agent's node thread, its git threads and its peer loop read
    it)."""

    def __init__(self, size: int = CACHE_SIZE, entries: int = CACHE_ENTRIES) -> None:
        self._size = size
        self._entries = entries
        self._weight = 0  # the entries of the trees held (and 1 for each other object)
        self._items: OrderedDict[tuple[str, bytes], ShaFile] = OrderedDict()
        self._lock = threading.Lock()
        self._memos: dict[str, object] = {}

    def memo(self, name: str, make: Callable[[], M]) -> M:
        """The node's one ``name`` store of facts derived from its objects (the checks' types
        and tree sizes, the tree splicer's indexes): made on first use, gone with the node.
        Objects never change, so such facts never go stale; each store bounds itself."""
        with self._lock:
            found = self._memos.get(name)
            if found is None:
                found = self._memos[name] = make()
        return cast(M, found)

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
            if not self._items:
                self._weight = 0
            known = self._items.pop(key, None)
            if known is not None:
                self._weight -= _weight(known)
            self._items[key] = obj
            self._weight += _weight(obj)
            while len(self._items) > 1 and (
                len(self._items) > self._size or self._weight > self._entries
            ):
                _, gone = self._items.popitem(last=False)
                self._weight -= _weight(gone)


def _weight(obj: ShaFile) -> int:
    return max(len(obj), 1) if isinstance(obj, Tree) else 1


class VaultObjects:
    """Read (and, inside a write transaction, add) the git objects of one vault."""

    def __init__(
        self, source: RecordSource, vault_id: str, cache: ObjectCache, name: str = ""
    ) -> None:
        self.source = source
        self.vault_id = vault_id
        self.name = name or vault_id  # for messages: the vault's name where the caller knows it
        self.ns = objects_ns(vault_id)
        self.cache = cache
        self.added: set[bytes] = set()  # hex ids added through this reader (one transaction)

    def get(self, sha: bytes, wanted: str = "") -> ShaFile:
        """The object with this hex id; ObjectMissing (NodeDamaged) if it is missing (a vault
        is closed). ``wanted`` (a type name other than "blob"): a large blob is not read whole
        to find that it is not one (BrokenHistory)."""
        obj = self.cache.get((self.vault_id, sha))
        if obj is not None:
            return obj
        raw = self.source.get(self.ns, binascii.unhexlify(sha))
        if raw is None:
            raise ObjectMissing(f"git object {sha.decode()} of vault {self.name} is missing")
        if raw and raw[0] == CHUNKED_BLOB:
            if wanted:
                raise BrokenHistory(f"{self.name}: {sha.decode()} is a blob, not a {wanted}")
            raw = BLOB_TYPE + self.get_blob_data(sha)
        obj = parse(raw, sha)
        self.cache.put((self.vault_id, sha), obj)
        return obj

    def has(self, sha: bytes) -> bool:
        """Whether the vault holds the object with this hex id (its record, not the cache:
        an object of a transaction that failed may be cached; a node file is asked without
        opening the record)."""
        key = binascii.unhexlify(sha)
        contains = getattr(self.source, "contains", None)
        if contains is not None:
            return bool(contains(self.ns, key))
        return self.source.get(self.ns, key) is not None

    def kind(self, sha: bytes) -> int | None:
        """The type number of the object with this hex id (a blob in parts is a blob), or None
        when the vault does not hold it. Trees and commits come from the cache when they can."""
        obj = self.cache.get((self.vault_id, sha))
        if obj is not None:
            return int(obj.type_num)
        raw = self.source.get(self.ns, binascii.unhexlify(sha))
        if raw is None:
            return None
        if not raw:
            raise NodeDamaged(f"git object {sha.decode()} of vault {self.name} is empty")
        return Blob.type_num if raw[0] == CHUNKED_BLOB else raw[0]

    def _wrong_type(self, sha: bytes, found: int, wanted: str) -> BrokenHistory:
        actual = TYPE_NAMES.get(found, "object of an unknown type")
        return BrokenHistory(f"{self.name}: {sha.decode()} is a {actual}, not a {wanted}")

    def get_tree(self, sha: bytes) -> Tree:
        """The tree with this hex id; BrokenHistory if the object is of another type."""
        obj = self.get(sha, "tree")
        if not isinstance(obj, Tree):
            raise self._wrong_type(sha, obj.type_num, "tree")
        return obj

    def get_commit(self, sha: bytes) -> Commit:
        """The commit with this hex id; BrokenHistory if the object is of another type."""
        obj = self.get(sha, "commit")
        if not isinstance(obj, Commit):
            raise self._wrong_type(sha, obj.type_num, "commit")
        return obj

    def get_blob_data(self, sha: bytes) -> bytes:
        return b"".join(self.iter_blob(sha))

    def _blob_record(self, sha: bytes) -> bytes:
        raw = self.source.get(self.ns, binascii.unhexlify(sha))
        if raw is None:
            raise ObjectMissing(f"blob {sha.decode()} of vault {self.name} is missing")
        if not raw or raw[0] not in (Blob.type_num, CHUNKED_BLOB):
            actual = TYPE_NAMES.get(raw[0], "object of an unknown type") if raw else "empty record"
            raise BrokenHistory(f"{self.name}: {sha.decode()} is a {actual}, not a blob")
        return raw

    def iter_blob(self, sha: bytes) -> Iterator[bytes]:
        """A blob's content in parts (one part unless it is larger than 1 MiB)."""
        raw = self._blob_record(sha)
        if raw[0] == Blob.type_num:
            yield raw[1:]
            return
        yield from self._parts(sha, raw)

    def _parts(self, sha: bytes, header: bytes) -> Iterator[bytes]:
        key = binascii.unhexlify(sha)
        count, total = _chunk_header(header, sha)
        seen = 0
        for index in range(count):
            chunk = self.source.get(self.ns, chunk_key(key, index))
            if chunk is None or len(chunk) != min(CHUNK_BYTES, total - seen):
                raise NodeDamaged(f"part {index} of blob {sha.decode()} is missing or damaged")
            seen += len(chunk)
            yield chunk

    def blob_size(self, sha: bytes) -> int:
        """A blob's length; a large blob's is read from its part list, not its parts."""
        raw = self._blob_record(sha)
        if raw[0] == CHUNKED_BLOB:
            return _chunk_header(raw, sha)[1]
        return len(raw) - 1

    # --- as objects travel between nodes: ``u8 type ‖ raw object`` -----------------------------

    def wire_record(self, sha: bytes, type_num: int) -> tuple[bytes | None, int]:
        """(the object as it travels, its length), read as the type its place says
        (BrokenHistory otherwise) straight from its sealed record, which holds exactly that;
        for a blob kept in parts: (None, its length), nothing read but its part list."""
        return self._as_wire(sha, type_num, self.source.get(self.ns, binascii.unhexlify(sha)))

    def wire_records(
        self, wanted: list[tuple[bytes, int]], read_up_to: int | None = None
    ) -> list[tuple[bytes | None, int]]:
        """``wire_record`` of each (id, type number), the records read in batches where the
        source can (a node file: one query per few hundred records). ``read_up_to``: a record
        larger than this is not read here (None, its length): ``wire`` reads it when it is
        sent, so that a batch never holds large objects."""
        get_many = getattr(self.source, "get_many", None)
        if get_many is None:
            return [self.wire_record(sha, type_num) for sha, type_num in wanted]
        keys = [binascii.unhexlify(sha) for sha, _ in wanted]
        out: list[tuple[bytes | None, int]] = []
        for (sha, type_num), record in zip(
            wanted, get_many(self.ns, keys, read_up_to=read_up_to), strict=True
        ):
            if isinstance(record, int):  # large: left unread, its length known
                out.append((None, record))
            else:
                out.append(self._as_wire(sha, type_num, record))
        return out

    def _as_wire(self, sha: bytes, type_num: int, record: bytes | None) -> tuple[bytes | None, int]:
        if record is None:
            raise ObjectMissing(f"git object {sha.decode()} of vault {self.name} is missing")
        found = record[0] if record else 0
        if found == CHUNKED_BLOB:
            found = Blob.type_num
        if found != type_num:
            raise self._wrong_type(sha, found, TYPE_NAMES.get(type_num, "blob"))
        if record[0] == CHUNKED_BLOB:
            return None, 1 + _chunk_header(record, sha)[1]
        return record, len(record)

    def wire(self, sha: bytes, type_num: int) -> bytes:
        """The object as it travels (``u8 type ‖ raw object``), read as ``type_num``."""
        record, _ = self.wire_record(sha, type_num)
        return record if record is not None else BLOB_TYPE + self.get_blob_data(sha)

    # --- writing ----------------------------------------------------------------------------

    def _tx(self) -> Transaction:
        if not isinstance(self.source, Transaction):
            raise RuntimeError(
                f"vault {self.name} is open for reading: objects are added inside a write "
                "transaction (open the vault's objects on one)"
            )
        return self.source

    def add(self, obj: ShaFile, *, cache: bool = True) -> bytes:
        """Store an object (inside a write transaction); return its hex id. A blob larger than
        1 MiB is stored in parts. ``cache``: keep ``obj`` itself as the parsed object (only
        for an object nobody changes afterwards)."""
        if isinstance(obj, Blob):
            return self.add_blob(obj.as_raw_string())
        tx = self._tx()
        sha: bytes = obj.id
        tx.put(self.ns, binascii.unhexlify(sha), encode(obj))
        self.added.add(sha)
        if cache:
            self.cache.put((self.vault_id, sha), obj)
        return sha

    def add_blob(self, data: bytes) -> bytes:
        """Store a secret's content as a blob without copying it more than sealing needs."""
        tx = self._tx()
        sha = object_id(Blob.type_num, data)
        key = binascii.unhexlify(sha)
        if len(data) <= CHUNK_BYTES:
            tx.put_parts(self.ns, key, (BLOB_TYPE, data))
        else:  # large secrets: parts of 1 MiB, so sealing never copies the whole secret
            view = memoryview(data)
            count = (len(data) + CHUNK_BYTES - 1) // CHUNK_BYTES
            for index in range(count):
                part = view[index * CHUNK_BYTES : (index + 1) * CHUNK_BYTES]
                tx.put_parts(self.ns, chunk_key(key, index), (part,))
            header = bytes([CHUNKED_BLOB]) + struct.pack(">IQ", count, len(data))
            tx.put(self.ns, key, header)
        self.added.add(sha)
        return sha


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
