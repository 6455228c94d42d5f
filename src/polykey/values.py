"""The one rule for a secret's final newline (docs/spec/entries.md, "Values").

A secret is stored exactly as it was given: `echo hunter2 | pk secrets write` stores
``hunter2\\n``, an editor adds a final newline, an import stores none. Wherever a secret is used
*as a value* (an environment variable, a ``pk://`` reference, a template placeholder, the
clipboard, a one-time-password key, a pass line) one final ``\\n`` or ``\\r\\n`` is dropped, so
every one of them means ``hunter2``. ``pk secrets cat`` prints the bytes as stored, separated.

It imports nothing, so every layer may use it (the CLI's fast path too).
"""

from __future__ import annotations

TYPE_CHECKING = False  # as typing.TYPE_CHECKING, without importing typing (10 ms)
if TYPE_CHECKING:
    from collections.abc import Iterable, Iterator


def as_value(data: bytes) -> bytes:
    """``data`` used as a value: without one final ``\\n`` or ``\\r\\n``."""
    if data.endswith(b"\r\n"):
        return data[:-2]
    if data.endswith(b"\n"):
        return data[:-1]
    return data


def cat_parts(values: Iterable[Iterable[bytes]], terminal: bool) -> Iterator[bytes]:
    """What `pk secrets cat` writes for ``values`` (each given as its parts): each as stored, a
    newline between two when the first does not end with one, and after the last one on a
    ``terminal`` (so that it ends before the prompt). Piped, the output ends exactly with the
    last value's bytes."""
    ended: bool | None = None  # whether the value before ends with a newline; None: no value yet
    for parts in values:
        if ended is False:
            yield b"\n"
        ended = False
        for part in parts:
            if part:
                yield part
                ended = part.endswith(b"\n")
    if terminal and ended is False:
        yield b"\n"
