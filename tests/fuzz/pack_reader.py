"""The in-memory pack reader of stock `git push` (sync/packin.py ``read_pack``, ``apply_delta``).

Input: ``u8 flags ‖ u8 step ‖ pack``. The pack arrives ``step`` bytes at a time (a network
trickling). Flag bit 0 appends the SHA-1 trailer of the whole input, so the fuzzer reaches
the delta resolution behind the checksum whenever its objects end exactly at the end of the
input. Flag bit 1 fuzzes ``apply_delta`` alone: ``u16 base length ‖ base ‖ delta``. A thin
pack's deltas may rest on the objects the vault holds (``BASES``). The documented refusal is
:class:`UpdateRefused`.

What is accepted is checked too: every object is ``u8 type ‖ raw`` of a type git names.
"""

from __future__ import annotations

import hashlib

from polykey.sync.checks import UpdateRefused
from polykey.sync.packin import NAMES, _Budget, apply_delta, read_pack
from polykey.vaults.objects import object_id
from tests.fuzz._bytes import Bytes, trickle

_EMPTY_TREE = b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"
_HELD = [(3, b"hello\n"), (3, b"x" * 300), (2, b""), (1, b"tree " + _EMPTY_TREE + b"\n")]
BASES = {object_id(kind, raw): (kind, raw) for kind, raw in _HELD}


def _base(sha: bytes) -> tuple[int, bytes] | None:
    return BASES.get(sha)


def one_input(data: bytes) -> None:
    b = Bytes(data)
    flags, step = b.u8(), b.u8()
    try:
        if flags & 2:
            base = b.chunk()
            apply_delta(base, b.rest(), _Budget(1 << 20))
            return
        pack = b.rest()
        if flags & 1:
            pack += hashlib.sha1(pack).digest()  # git's pack checksum
        objects = read_pack(trickle(pack, step or 1 << 16), _base)
    except UpdateRefused:
        return
    for obj in objects:
        assert obj and obj[0] in NAMES, "an object of no git type came out of the pack"
