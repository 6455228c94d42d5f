"""Frames: ``u32 big-endian length ‖ body``, the one framing of the agent's socket and of the
`polykey` channels between nodes (docs/spec/agent.md "Frames", docs/spec/peer-protocol.md
"Messages"; test vectors in docs/spec/frame-vectors.json).

This module knows bytes and sizes; what a body holds (a JSON-RPC 2.0 message, bytes as
``{"$b64": ...}``) is polykey.codec, which builds on it. It imports nothing, not even typing:
the CLI's hot path (polykey.cli.fast, `pk secrets cat` while an agent runs, timed against
`pass show`) frames its requests with it. For that path alone it also writes JSON by hand
(``json_value``, ``request``), byte for byte as ``codec.encode`` does (compact, ASCII only, a
test holds the two to the vectors), so that `pk secrets cat` needs no JSON module.
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (10 ms)
if TYPE_CHECKING:
    from collections.abc import Callable

HEADER_SIZE = 4
U32_MAX = 0xFFFF_FFFF  # the largest length a header can say
AGENT_MAX = 192 * 1024 * 1024
"""A frame on the agent's socket, either way: a 100 MB secret, base64-encoded, fits."""
RAW = b"\x00"
"""First byte of a raw reply on the agent's socket (``secrets.cat`` with ``"raw": true``): the
values, concatenated; a JSON body never starts with it."""
READ_CHUNK = 1 << 20


class FrameError(ValueError):
    """What the other side sent is not a frame this side takes: a length over the limit, a frame
    cut short, or (polykey.codec.BadMessage) a body that is not a valid message. The connection
    or channel closes."""


def frame(body: bytes, limit: int = U32_MAX) -> bytes:
    """``body`` with its length in front; FrameError if it is longer than ``limit``."""
    if len(body) > limit:
        raise FrameError(f"a frame of {len(body)} bytes (at most {limit})")
    return len(body).to_bytes(HEADER_SIZE, "big") + body


def size(header: bytes, limit: int) -> int:
    """The length a frame's header says, judged before any of the body is read: FrameError
    if it is over ``limit``."""
    if len(header) != HEADER_SIZE:
        raise FrameError("cut short")
    length = int.from_bytes(header, "big")
    if length > limit:
        raise FrameError(f"a frame of {length} bytes (at most {limit})")
    return length


def read(recv: Callable[[int], bytes], limit: int) -> bytes:
    """The body of the next frame from a blocking stream (``recv``: a socket's), at most
    ``limit`` bytes; FrameError if it is larger or the stream ends first. The stream's own
    errors (OSError, a timeout) pass through."""
    return read_exactly(recv, size(read_exactly(recv, HEADER_SIZE), limit))


def read_exactly(recv: Callable[[int], bytes], n: int) -> bytes:
    """``n`` bytes from a blocking stream; FrameError("cut short") if it ends first."""
    chunks = []
    while n:
        chunk = recv(min(n, READ_CHUNK))
        if not chunk:
            raise FrameError("cut short")
        chunks.append(chunk)
        n -= len(chunk)
    return b"".join(chunks)


# --- JSON written by hand, for the hot path --------------------------------------------------

_SHORT = {'"': '\\"', "\\": "\\\\", "\b": "\\b", "\f": "\\f", "\n": "\\n", "\r": "\\r", "\t": "\\t"}


def json_text(text: str) -> str:
    """``text`` as a JSON string, as ``json.dumps`` writes it (ASCII only: every other character
    as ``\\uXXXX``, beyond the BMP as a surrogate pair). ValueError for text that no UTF-8 can
    carry (a surrogate code point: argv's undecodable bytes), which the other side refuses."""
    if text.isascii() and text.isprintable():  # the common case: only " and \ to escape
        return '"' + text.replace("\\", "\\\\").replace('"', '\\"') + '"'
    out = ['"']
    for ch in text:
        code = ord(ch)
        if 0x20 <= code < 0x7F:
            out.append(_SHORT.get(ch, ch))
        elif ch in _SHORT:
            out.append(_SHORT[ch])
        elif 0xD800 <= code <= 0xDFFF:
            raise ValueError("text that is not valid Unicode")
        elif code > 0xFFFF:
            code -= 0x10000
            out.append(f"\\u{0xD800 | (code >> 10):04x}\\u{0xDC00 | (code & 0x3FF):04x}")
        else:
            out.append(f"\\u{code:04x}")
    out.append('"')
    return "".join(out)


def json_value(value: object) -> str:
    """``value`` as compact JSON, as ``codec.encode`` writes it: text, whole numbers, true,
    false, null, lists (and tuples), objects with text keys, and bytes as ``{"$b64": ...}``.
    TypeError for anything else (a float, say: no message of ours holds one)."""
    if isinstance(value, str):
        return json_text(value)
    if value is None:
        return "null"
    if value is True:
        return "true"
    if value is False:
        return "false"
    if isinstance(value, int):
        return str(int(value))
    if isinstance(value, bytes | bytearray):
        import binascii  # built into the interpreter

        return '{"$b64":"' + binascii.b2a_base64(value, newline=False).decode("ascii") + '"}'
    if isinstance(value, list | tuple):
        return "[" + ",".join([json_value(v) for v in value]) + "]"
    if isinstance(value, dict):
        parts = []
        for key, item in value.items():
            if not isinstance(key, str):
                raise TypeError("an object's keys must be text")
            parts.append(json_text(key) + ":" + json_value(item))
        return "{" + ",".join(parts) + "}"
    raise TypeError(f"no JSON for a {type(value).__name__}")


def request(method: str, params: dict[str, object], request_id: int = 1) -> bytes:
    """The body of a JSON-RPC 2.0 request, byte for byte as ``codec.encode`` writes it."""
    message = {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}
    return json_value(message).encode("ascii")


def result_prefix(request_id: int = 1) -> bytes:
    """How a reply carrying a result to request ``request_id`` begins, as the agent writes it:
    the hot path tells success from an error with it, without a JSON decoder."""
    return b'{"jsonrpc":"2.0","id":' + str(request_id).encode("ascii") + b',"result":'
