"""Every peer method's parameters: ``sync.server.PeerService.handle(peer, method, params)`` on a
real node (tests/fuzz/_node.py: fast test KDF, under /dev/shm, made once per process).

The node holds a vault ``work`` (three commits) granted to ``PEER`` with every permission, and a
vault ``other`` granted to nobody. Input: ``u8 mode ‖ u8 peer ‖ rest``; the peer is ``PEER``,
a stranger, or the node itself. Modes:

- 0..4: ``peer.hello``, ``vaults.scan``, ``vaults.fetch``, ``vaults.receive``,
  ``notifications.send`` with the rest as the JSON params (``\\xfe\\xfe n c`` is ``c``
  repeated), decoded as the channel decodes them: ``json.loads`` then ``codec.from_wire``
  (input the channel itself refuses is skipped here, it is peer_frame's business);
- 5: a push of objects built from the rest (tests/fuzz/_objects.py: commits signed by ``PEER``
  may land), through ``vaults.receive`` or, as stock `git push` does, ``PeerService.receive``
  with the head the pusher saw;
- 6: a method named by the input (``u8 length ‖ name ‖ JSON``).

The documented refusals are the :class:`PolykeyError` family (the channel answers them as
errors). A push that lands is undone after the input (the ref goes back), so every input meets
the same node.
"""

from __future__ import annotations

import json
from typing import Any

from polykey import codec
from polykey.errors import PolykeyError
from polykey.ids import NodeId
from tests.fuzz._bytes import Bytes, expand
from tests.fuzz._node import World, world
from tests.fuzz._objects import Builder

METHODS = ("peer.hello", "vaults.scan", "vaults.fetch", "vaults.receive", "notifications.send")


def _params(text: bytes) -> dict[str, Any] | None:
    """The params as the channel would hand them over, or None where the channel refuses."""
    try:
        doc = codec.from_wire(json.loads(text))
    except (ValueError, RecursionError):
        return None
    return doc if isinstance(doc, dict) else None


def _push(w: World, peer: NodeId, b: Bytes) -> None:
    how = b.u8()
    wanted = (w.info.id, "work", "other", "nope")[how % 4]
    received, head = Builder(b, w.anchors).build()
    if how & 4:
        expected = (None, w.head, b"0" * 40, head)[(how >> 3) % 4]
        w.service.receive(peer, wanted, head, received, expected)
    else:
        params = {"vault": wanted, "head": head.decode(), "objects": received}
        w.service.handle(peer, "vaults.receive", params)


def one_input(data: bytes) -> None:
    w = world()
    b = Bytes(data)
    mode, peer = b.u8() % 7, w.peers[b.u8() % 3]
    try:
        if mode == 5:
            _push(w, peer, b)
            return
        method = METHODS[mode] if mode < 5 else b.small().decode("utf-8", "surrogateescape")
        params = _params(expand(b.rest()))
        if params is None:
            return
        result = w.service.handle(peer, method, params)
        json.dumps(codec.to_wire(result))  # the reply must be sendable
    except PolykeyError:
        return
    finally:
        w.reset()
