"""A node reached inside this process: a backup node opened from its file (`pk backup`).

``LocalClient`` answers as ``PeerClient`` does over SSH (``call``, ``hello``): each request and
each reply is encoded to the wire form and read back (bytes as ``$b64``, the same JSON), the
other node's errors arrive as PeerError with their message, and what it sends is checked by the
same code as any peer's (sync/checks.py). Only the socket is missing.
"""

from __future__ import annotations

import json
from typing import Any

from polykey import codec
from polykey.errors import PolykeyError
from polykey.ids import NodeId, encode_node_id

PROTOCOL_VERSION = 1


class LocalClient:
    def __init__(self, node_id: NodeId, me: NodeId, serve: Any) -> None:
        self.node_id = node_id
        self.me = me
        self.serve = serve
        self.hello: dict[str, Any] = {
            "version": PROTOCOL_VERSION,
            "node_id": encode_node_id(node_id),
        }

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        from polykey.network.ssh import PeerError

        sent = codec.from_wire(json.loads(json.dumps(codec.to_wire(params))))
        try:
            result = self.serve(self.me, method, sent)
        except PolykeyError as exc:
            raise PeerError(exc.message[:500]) from None
        answer = codec.from_wire(json.loads(json.dumps(codec.to_wire(result))))
        if not isinstance(answer, dict):
            raise PeerError("the other node sent a malformed reply")
        return answer
