"""The tree and commit validators: ``sync.checks.validate`` on objects a hostile peer sends.

Input: ``u8 mode ‖ objects``; the objects are built from the input (tests/fuzz/_objects.py):
blobs, trees with any names and modes, commits signed by an allowed node, a stranger, nobody,
or with a signature made of the input, and raw objects of any type byte and body. Mode bit 0
clear: a clone (nothing is held). Set: a pull or push into vault ``work`` of the shared node
(tests/fuzz/_node.py), called as ``PeerService.receive`` calls it; new objects may name the
vault's own. The documented refusal is :class:`UpdateRefused`.

What is accepted is checked too: every returned object is keyed by its own id, the head is
among them (or held) and is a commit.
"""

from __future__ import annotations

import hashlib

from polykey.sync.checks import TYPES, UpdateRefused, validate
from tests.fuzz._bytes import Bytes
from tests.fuzz._node import world
from tests.fuzz._objects import OWNER, PEER, Builder

SIGNERS = {OWNER.public, PEER.public}


def one_input(data: bytes) -> None:
    b = Bytes(data)
    clone = b.u8() % 2 == 0
    try:
        if clone:
            received, head = Builder(b).build()
            objects = validate(received, head, lambda _sha: False, SIGNERS)
        else:
            w = world()
            received, head = Builder(b, w.anchors).build()
            local = w.node.vaults.open("work").objects()
            store = w.node.store

            def known(sha: bytes) -> bool:
                return store.contains(local.ns, bytes.fromhex(sha.decode()))

            objects = validate(received, head, known, SIGNERS, local=local)
    except UpdateRefused:
        return
    for sha, raw in objects.items():
        digest = hashlib.sha1(b"%s %d\x00" % (TYPES[raw[0]], len(raw) - 1))
        digest.update(raw[1:])
        assert digest.hexdigest().encode() == sha, "an object is keyed by another id"
    if head in objects:
        assert objects[head][0] == 1, "the head accepted is not a commit"
    else:
        assert not clone and head in w.anchors[1], "the head accepted is missing"
