"""Reading structure out of a fuzzer's bytes, deterministically and without ever failing."""

from __future__ import annotations

from collections.abc import Callable


class Bytes:
    """A cursor over the input: every read returns something (zeros or b"" past the end)."""

    def __init__(self, data: bytes) -> None:
        self.data = data
        self.pos = 0

    def left(self) -> int:
        return len(self.data) - self.pos

    def u8(self) -> int:
        if self.pos >= len(self.data):
            return 0
        self.pos += 1
        return self.data[self.pos - 1]

    def u16(self) -> int:
        return self.u8() << 8 | self.u8()

    def take(self, n: int) -> bytes:
        out = self.data[self.pos : self.pos + n]
        self.pos += len(out)
        return out

    def chunk(self) -> bytes:
        """A piece of at most 65535 bytes: a u16 length, then that many bytes."""
        return self.take(self.u16())

    def small(self) -> bytes:
        """A piece of at most 255 bytes: a u8 length, then that many bytes."""
        return self.take(self.u8())

    def rest(self) -> bytes:
        out = self.data[self.pos :]
        self.pos = len(self.data)
        return out


def split(data: bytes, sep: bytes = b"\x00\xff") -> list[bytes]:
    """Pieces separated by ``sep``: a light structure that byte mutations keep."""
    return data.split(sep)


def trickle(data: bytes, step: int) -> Callable[[int], bytes]:
    """``read_some(n)`` over ``data``: at most ``step`` bytes a call (a network trickling);
    b"" once it is all read."""
    pos = 0
    step = max(1, step)

    def read_some(n: int) -> bytes:
        nonlocal pos
        out = data[pos : pos + min(n, step)]
        pos += len(out)
        return out

    return read_some


REPEAT = b"\xfe\xfe"
MAX_EXPANDED = 64 * 1024


def expand(data: bytes) -> bytes:
    """``\xfe\xfe n c`` stands for the byte ``c`` repeated ``8 n + 1`` times: deep nesting
    (``[[[[…``) and long runs are one mutation away instead of hundreds. At most 64 KiB."""
    if REPEAT not in data:
        return data
    out = bytearray()
    pos = 0
    while len(out) < MAX_EXPANDED:
        at = data.find(REPEAT, pos)
        if at < 0 or at + 4 > len(data):
            out += data[pos:]
            break
        out += data[pos:at]
        out += data[at + 3 : at + 4] * (8 * data[at + 2] + 1)
        pos = at + 4
    return bytes(out[:MAX_EXPANDED])


def reframe(stream: bytes) -> bytes:
    """``u32 length ‖ body`` frames with each body expanded (and its length made right again);
    a last incomplete frame is kept as it is."""
    out = bytearray()
    pos = 0
    while pos + 4 <= len(stream):
        size = int.from_bytes(stream[pos : pos + 4], "big")
        if pos + 4 + size > len(stream):
            break
        body = expand(stream[pos + 4 : pos + 4 + size])
        out += len(body).to_bytes(4, "big") + body
        pos += 4 + size
    return bytes(out + stream[pos:])
