"""Sealed records: hidden names, associated data, and the codecs of records, manifests and root.

Layout and byte formats are specified in docs/spec/node-file.md; this module is that page in code.
"""

from __future__ import annotations

import struct
from collections.abc import Callable
from dataclasses import dataclass, field
from enum import IntEnum

from polykey.crypto.aead import SealBroken, Sealer
from polykey.crypto.kdf import hkdf, hmac_sha256
from polykey.errors import NodeDamaged

FORMAT = 1
ID_BYTES = 16
SEAL_INFO = b"polykey/v1 record seal"
NAME_INFO = b"polykey/v1 record name"
MAX_KEY_BYTES = 4096


class Kind(IntEnum):
    """What a sealed value is; bound into its associated data so roles cannot be swapped."""

    IMMUTABLE = 1  # a write-once record (content-addressed: git objects)
    MUTABLE = 2  # a record whose version is held by its namespace's manifest
    MANIFEST = 3  # the versions and keys of one mutable namespace
    ROOT = 4  # the versions of every manifest, and the names of all namespaces


@dataclass(frozen=True, slots=True)
class Namespace:
    """A named set of records, mutable or write-once."""

    name: str
    immutable: bool = False

    @property
    def kind(self) -> Kind:
        return Kind.IMMUTABLE if self.immutable else Kind.MUTABLE


def aad(kind: Kind, ns_id: bytes = b"", rec_id: bytes = b"", version: int = 0) -> bytes:
    return b"PKR" + struct.pack(">BH", kind, FORMAT) + ns_id + rec_id + struct.pack(">Q", version)


class RecordKeys:
    """The two subkeys of the data key: one seals values, one hides names."""

    __slots__ = ("_name_key", "sealer")

    def __init__(self, data_key: bytes) -> None:
        self.sealer = Sealer(hkdf(data_key, SEAL_INFO))
        self._name_key = hkdf(data_key, NAME_INFO)

    def __repr__(self) -> str:
        return "RecordKeys(<hidden>)"

    def ns_id(self, namespace: str) -> bytes:
        return hmac_sha256(self._name_key, b"ns\x00" + namespace.encode())[:ID_BYTES]

    def rec_id(self, ns_id: bytes, key: bytes) -> bytes:
        return hmac_sha256(self._name_key, b"rec\x00" + ns_id + key)[:ID_BYTES]

    def seal(self, plaintext: bytes, aad_: bytes, nonce: bytes | None = None) -> bytes | bytearray:
        return self.sealer.seal(plaintext, aad_, nonce)

    def write_once(self, ns_id: bytes) -> Callable[[bytes, RecordValue], SealedRow]:
        """Seal write-once records of one namespace: (record id, sealed record) of a key and
        value, exactly as ``rec_id``, ``encode_record`` and ``seal`` under ``aad(IMMUTABLE,
        ns_id, rec_id, 0)`` make them, with what is the same for every record made once (a
        clone lands thousands)."""
        name_key, seal = self._name_key, self.sealer.seal
        named = b"rec\x00" + ns_id
        head, tail = aad(Kind.IMMUTABLE, ns_id)[:-8], struct.pack(">Q", 0)

        def one(key: bytes, value: RecordValue) -> SealedRow:
            rec_id = hmac_sha256(name_key, named + key)[:ID_BYTES]
            return rec_id, seal(encode_record(key, value), head + rec_id + tail)

        return one

    def immutable_aad(self, ns_id: bytes) -> Callable[[bytes], bytes]:
        """``aad(IMMUTABLE, ns_id, rec_id, 0)`` of one namespace, by record id."""
        head, tail = aad(Kind.IMMUTABLE, ns_id)[:-8], struct.pack(">Q", 0)
        return lambda rec_id: head + rec_id + tail

    def open(self, sealed: bytes | bytearray, aad_: bytes, place: str) -> bytes:
        try:
            return self.sealer.open(sealed, aad_)
        except SealBroken:
            raise NodeDamaged(f"{place} failed authentication") from None


# --- record plaintext: u32 key length, key, value ----------------------------------------------

RecordValue = bytes | tuple[bytes | memoryview, ...]  # a value, or its parts (joined when sealed)
SealedRow = tuple[bytes, bytes | bytearray]  # (record id, sealed record)


def encode_record(key: bytes, value: RecordValue) -> bytes:
    """The plaintext of a record; a value given in parts is joined once, here."""
    if type(value) is bytes:
        return len(key).to_bytes(4, "big") + key + value
    parts = value if isinstance(value, tuple) else (value,)
    return b"".join((struct.pack(">I", len(key)), key, *parts))


def decode_record(plain: bytes, place: str) -> tuple[bytes, bytes]:
    if len(plain) < 4:
        raise NodeDamaged(f"{place} is truncated")
    (n,) = struct.unpack_from(">I", plain)
    if n > len(plain) - 4:
        raise NodeDamaged(f"{place} is truncated")
    return plain[4 : 4 + n], plain[4 + n :]


# --- manifests: the keys and versions of one mutable namespace -----------------------------------


@dataclass
class Manifest:
    name: str
    entries: dict[bytes, tuple[int, bytes]] = field(default_factory=dict)  # rec_id -> (ver, key)

    def encode(self) -> bytes:
        name = self.name.encode()
        out = [struct.pack(">H", len(name)), name, struct.pack(">I", len(self.entries))]
        for rec_id in sorted(self.entries):
            ver, key = self.entries[rec_id]
            out.append(rec_id + struct.pack(">QH", ver, len(key)) + key)
        return b"".join(out)

    @classmethod
    def decode(cls, plain: bytes, place: str) -> Manifest:
        try:
            (n,) = struct.unpack_from(">H", plain, 0)
            name = plain[2 : 2 + n].decode()
            pos = 2 + n
            (count,) = struct.unpack_from(">I", plain, pos)
            pos += 4
            entries: dict[bytes, tuple[int, bytes]] = {}
            for _ in range(count):
                rec_id = plain[pos : pos + ID_BYTES]
                ver, klen = struct.unpack_from(">QH", plain, pos + ID_BYTES)
                pos += ID_BYTES + 10
                key = plain[pos : pos + klen]
                if len(rec_id) != ID_BYTES or len(key) != klen:
                    raise ValueError("truncated")
                pos += klen
                entries[rec_id] = (ver, key)
        except (struct.error, ValueError, UnicodeDecodeError):
            raise NodeDamaged(f"{place} is malformed") from None
        if pos != len(plain):
            raise NodeDamaged(f"{place} has trailing bytes")
        return cls(name, entries)


# --- the root: every namespace's name and kind, and each manifest's version ----------------------


@dataclass
class Root:
    epoch: int = 0
    # ns_id -> (kind, manifest version (0 for write-once namespaces), name)
    namespaces: dict[bytes, tuple[Kind, int, str]] = field(default_factory=dict)

    def encode(self) -> bytes:
        out = [struct.pack(">HQI", FORMAT, self.epoch, len(self.namespaces))]
        for ns_id in sorted(self.namespaces):
            kind, ver, name = self.namespaces[ns_id]
            raw = name.encode()
            out.append(ns_id + struct.pack(">BQH", kind, ver, len(raw)) + raw)
        return b"".join(out)

    @classmethod
    def decode(cls, plain: bytes) -> Root:
        try:
            fmt, epoch, count = struct.unpack_from(">HQI", plain, 0)
            if fmt != FORMAT:
                raise ValueError("format")
            pos = 14
            namespaces: dict[bytes, tuple[Kind, int, str]] = {}
            for _ in range(count):
                ns_id = plain[pos : pos + ID_BYTES]
                kind, ver, n = struct.unpack_from(">BQH", plain, pos + ID_BYTES)
                pos += ID_BYTES + 11
                name = plain[pos : pos + n].decode()
                if len(ns_id) != ID_BYTES or len(name.encode()) != n:
                    raise ValueError("truncated")
                pos += n
                namespaces[ns_id] = (Kind(kind), ver, name)
        except (struct.error, ValueError, UnicodeDecodeError):
            raise NodeDamaged("the root record is malformed") from None
        if pos != len(plain):
            raise NodeDamaged("the root record has trailing bytes")
        return cls(epoch, namespaces)
