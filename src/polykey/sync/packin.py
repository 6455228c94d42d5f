"""A git pack from stock `git push`, read off the wire into memory with hard limits.

dulwich's own pack reading spools a large pack to a temporary file in plaintext and applies
deltas without a size budget, so the pack is read here instead: every byte stays in memory; the
pack is at most ``MAX_PACK_BYTES``, each object (and each delta's declared result) at most
``MAX_PACK_OBJECT_BYTES``, and everything inflated together at most ``MAX_INFLATED_BYTES`` (a
zlib or delta bomb is refused before it is expanded). Each object is held once, already in its
``u8 type ‖ raw`` form: a delta's result is joined from views of its base, and the list returned
shares its objects with the work in progress, so the peak is the inflated total plus one object.
A delta may rest on an object the vault holds (git sends thin packs). The result is the pack's
objects, not yet trusted: sync/checks.py ``validate()`` checks them as any peer's objects.
"""

from __future__ import annotations

import hashlib
import zlib
from collections.abc import Callable

from polykey.sync.checks import UpdateRefused
from polykey.vaults.objects import object_id

MAX_PACK_BYTES = 64 * 1024 * 1024  # as one `polykey` frame: a push carries as much either way
MAX_INFLATED_BYTES = 256 * 1024 * 1024
# One object of a pushed pack: no more than the pack itself may carry compressed.
MAX_PACK_OBJECT_BYTES = 64 * 1024 * 1024
MAX_OBJECTS = 100_000
OFS_DELTA, REF_DELTA = 6, 7
NAMES = {1: b"commit", 2: b"tree", 3: b"blob", 4: b"tag"}
CHUNK = 64 * 1024

Base = Callable[[bytes], "tuple[int, bytes] | None"]  # hex id → (type, raw) held by the vault


class _Budget:
    def __init__(self, limit: int) -> None:
        self.left = limit

    def spend(self, size: int) -> None:
        if size > MAX_PACK_OBJECT_BYTES:
            raise UpdateRefused(
                f"an object in the pack is too large (over {MAX_PACK_OBJECT_BYTES >> 20} MiB)"
            )
        self.left -= size
        if self.left < 0:
            raise UpdateRefused("the pack inflates to too much data")


class _Stream:
    """The pack's bytes as they arrive; all of them are kept (bounded) for the checksum."""

    def __init__(self, read_some: Callable[[int], bytes], limit: int) -> None:
        self.read_some = read_some
        self.limit = limit
        self.buf = bytearray()
        self.pos = 0

    def _fill(self) -> None:
        if len(self.buf) >= self.limit:
            raise UpdateRefused(f"the pack is larger than {self.limit // (1024 * 1024)} MiB")
        data = self.read_some(min(CHUNK, self.limit - len(self.buf)))
        if not data:
            raise UpdateRefused("the pack ended early")
        self.buf += data

    def take(self, n: int) -> bytes:
        while len(self.buf) - self.pos < n:
            self._fill()
        out = bytes(self.buf[self.pos : self.pos + n])
        self.pos += n
        return out

    def byte(self) -> int:
        return self.take(1)[0]

    def inflate(self, size: int, prefix: bytes = b"") -> bytes:
        """One zlib stream that must inflate to exactly ``size`` bytes (never more is made),
        returned after ``prefix``."""
        inflater = zlib.decompressobj()
        out: list[bytes] = [prefix]
        got = 0
        while True:
            if self.pos == len(self.buf):
                self._fill()
            chunk = bytes(self.buf[self.pos : self.pos + CHUNK])
            try:
                data = inflater.decompress(chunk, min(size - got + 1, CHUNK * 16))
            except zlib.error:
                raise UpdateRefused("an object in the pack is not valid zlib data") from None
            got += len(data)
            if got > size:
                raise UpdateRefused("an object in the pack is larger than its header says")
            out.append(data)
            if inflater.eof:
                self.pos += len(chunk) - len(inflater.unused_data)
                break
            self.pos += len(chunk) - len(inflater.unconsumed_tail)
        if got != size:
            raise UpdateRefused("an object in the pack is smaller than its header says")
        return b"".join(out)


def _varint(data: bytes, index: int) -> tuple[int, int]:
    value = shift = 0
    while True:
        if index >= len(data) or shift > 63:
            raise UpdateRefused("a delta in the pack is malformed")
        c = data[index]
        index += 1
        value |= (c & 0x7F) << shift
        shift += 7
        if not c & 0x80:
            return value, index


def apply_delta(
    base: bytes | memoryview, delta: bytes, budget: _Budget, prefix: bytes = b""
) -> bytes:
    """git's delta format; the declared result size is charged to the budget before any copy.
    The result (after ``prefix``) is joined once from views of ``base`` and the delta's own
    bytes."""
    src_size, i = _varint(delta, 0)
    dest_size, i = _varint(delta, i)
    if src_size != len(base):
        raise UpdateRefused("a delta in the pack does not fit its base")
    budget.spend(dest_size)
    view = memoryview(base)
    pieces: list[bytes | memoryview] = [prefix]
    made = 0
    while i < len(delta):
        cmd = delta[i]
        i += 1
        if cmd & 0x80:
            offset = size = 0
            for bit in range(4):
                if cmd & (1 << bit):
                    if i >= len(delta):
                        raise UpdateRefused("a delta in the pack is truncated")
                    offset |= delta[i] << (8 * bit)
                    i += 1
            for bit in range(3):
                if cmd & (1 << (4 + bit)):
                    if i >= len(delta):
                        raise UpdateRefused("a delta in the pack is truncated")
                    size |= delta[i] << (8 * bit)
                    i += 1
            size = size or 0x10000
            if offset + size > len(base) or made + size > dest_size:
                raise UpdateRefused("a delta in the pack copies outside its bounds")
            pieces.append(view[offset : offset + size])
            made += size
        elif cmd:
            if i + cmd > len(delta) or made + cmd > dest_size:
                raise UpdateRefused("a delta in the pack inserts outside its bounds")
            pieces.append(delta[i : i + cmd])
            made += cmd
            i += cmd
        else:
            raise UpdateRefused("a delta in the pack holds an invalid instruction")
    if made != dest_size:
        raise UpdateRefused("a delta in the pack does not make the size it declares")
    return b"".join(pieces)


def read_pack(read_some: Callable[[int], bytes], base: Base) -> list[bytes]:
    """Read one pack from ``read_some``; return its objects, deltas resolved, or raise
    UpdateRefused. Objects named by a thin pack's deltas come from ``base`` (not returned)."""
    stream = _Stream(read_some, MAX_PACK_BYTES)
    head = stream.take(12)
    if head[:4] != b"PACK" or int.from_bytes(head[4:8], "big") not in (2, 3):
        raise UpdateRefused("the data sent is not a git pack")
    count = int.from_bytes(head[8:12], "big")
    if count > MAX_OBJECTS:
        raise UpdateRefused("the pack holds too many objects")
    budget = _Budget(MAX_INFLATED_BYTES)
    whole: dict[int, bytes] = {}  # offset → type ‖ raw
    on_offset: dict[int, list[tuple[int, bytes]]] = {}  # base offset → [(offset, delta)]
    on_id: dict[bytes, list[tuple[int, bytes]]] = {}  # base id → [(offset, delta)]
    for _ in range(count):
        offset = stream.pos
        c = stream.byte()
        kind, size, shift = (c >> 4) & 7, c & 0x0F, 4
        while c & 0x80:
            c = stream.byte()
            size |= (c & 0x7F) << shift
            shift += 7
            if shift > 63:
                raise UpdateRefused("an object header in the pack is malformed")
        budget.spend(size)
        if kind in NAMES:
            whole[offset] = stream.inflate(size, bytes([kind]))
        elif kind == OFS_DELTA:
            c = stream.byte()
            back = c & 0x7F
            while c & 0x80:
                c = stream.byte()
                back = ((back + 1) << 7) | (c & 0x7F)
                if back > offset:
                    break
            if not 0 < back <= offset:
                raise UpdateRefused("a delta in the pack names a base outside the pack")
            on_offset.setdefault(offset - back, []).append((offset, stream.inflate(size)))
        elif kind == REF_DELTA:
            ref = stream.take(20).hex().encode()
            on_id.setdefault(ref, []).append((offset, stream.inflate(size)))
        else:
            raise UpdateRefused("the pack holds an object of an unknown type")
    digest = hashlib.sha1(stream.buf[: stream.pos]).digest()  # noqa: S324 - git's pack checksum
    if stream.take(20) != digest:
        raise UpdateRefused("the pack's checksum does not match")
    return _resolve(whole, on_offset, on_id, base, budget)


def _resolve(
    whole: dict[int, bytes],
    on_offset: dict[int, list[tuple[int, bytes]]],
    on_id: dict[bytes, list[tuple[int, bytes]]],
    base: Base,
    budget: _Budget,
) -> list[bytes]:
    """Apply every delta once its base is known: from the pack first, then from the vault.
    Every object is one ``type ‖ raw`` bytes, shared by the result and the work list."""
    out = list(whole.values())
    todo = list(whole.items())
    whole.clear()

    def apply_all(children: list[tuple[int, bytes]], kind: int, raw: bytes | memoryview) -> None:
        prefix = bytes([kind])
        for child, delta in children:
            made = apply_delta(raw, delta, budget, prefix)
            out.append(made)
            todo.append((child, made))

    while True:
        while todo:
            offset, obj = todo.pop()
            kind, raw = obj[0], memoryview(obj)[1:]
            children = on_offset.pop(offset, []) + on_id.pop(object_id(kind, raw), [])
            if children:
                apply_all(children, kind, raw)
        external = next(iter(on_id), None)
        if external is None:
            break
        found = base(external)  # a thin pack: the vault's object itself is not returned
        if found is None or found[0] not in NAMES:
            raise UpdateRefused("a delta in the pack rests on an object that is not there")
        apply_all(on_id.pop(external), found[0], found[1])
    if on_offset:
        raise UpdateRefused("a delta in the pack rests on an object that is not there")
    return out
