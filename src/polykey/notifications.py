"""Notifications between nodes: an inbox, and an outbox the agent retries with backoff.

Inbox: mutable namespace ``notifications/inbox`` (key: time-ordered id; value: JSON
{"from", "message", "time", "read"}). Outbox: ``notifications/outbox`` (JSON {"to", "message",
"time", "attempts", "next"}). A node accepts notifications only from nodes it knows (its node
graph) or has granted something; messages are at most 4 KiB and the inbox keeps the newest 1,000.
The Node owns the one ``Notifications``; the peer port hands it what peers send.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.network.graph import Graph
from polykey.network.peers import Peers
from polykey.store.nodefile import NodeFile, Transaction
from polykey.store.records import Namespace
from polykey.trust.acl import Acl

INBOX = Namespace("notifications/inbox")
OUTBOX = Namespace("notifications/outbox")
MAX_MESSAGE = 4096
MAX_INBOX = 1000
BACKOFF_S = (5, 30, 120, 600, 3600)


class NotificationRefused(PolykeyError):
    """The notification was refused."""

    exit_code = 55


def _new_key() -> bytes:
    return f"{time.time_ns():020d}-{os.urandom(4).hex()}".encode()


def check_message(message: str) -> str:
    if not message or len(message.encode()) > MAX_MESSAGE:
        raise InvalidInput(f"a notification is 1 to {MAX_MESSAGE} bytes")
    return message


class Notifications:
    """One node's inbox and outbox."""

    def __init__(self, store: NodeFile, acl: Acl, graph: Graph, peers: Peers) -> None:
        self.store = store
        self.acl = acl
        self.graph = graph
        self.peers = peers

    def receive(self, sender: NodeId, message: object) -> dict[str, Any]:
        """Store an incoming notification from an authenticated peer."""
        if not isinstance(message, str):
            raise InvalidInput("message must be text")
        check_message(message)
        if not (self.graph.knows(sender) or self.acl.knows(sender)):
            raise NotificationRefused("this node does not know the sender")
        doc = {
            "from": encode_node_id(sender),
            "message": message,
            "time": int(time.time()),
            "read": False,
        }
        with self.store.write() as tx:
            tx.put(INBOX, _new_key(), json.dumps(doc).encode())
            keys = self.store.keys(INBOX)
            for old in keys[: max(0, len(keys) + 1 - MAX_INBOX)]:
                tx.delete(INBOX, old)
        return {"received": True}

    def send(self, to: NodeId, message: str) -> dict[str, Any]:
        """Deliver now; when the node cannot be reached, keep it in the outbox for the agent."""
        from polykey.network.ssh import PeerUnreachable

        check_message(message)
        try:
            self.peers.call(to, "notifications.send", {"message": message})
        except PeerUnreachable:
            doc = {
                "to": encode_node_id(to),
                "message": message,
                "time": int(time.time()),
                "attempts": 1,
                "next": time.time() + BACKOFF_S[0],
            }
            with self.store.write() as tx:
                tx.put(OUTBOX, _new_key(), json.dumps(doc).encode())
            return {"delivered": False, "queued": True}
        return {"delivered": True, "queued": False}

    def deliver_outbox(self, now: float | None = None) -> int:
        """Retry due notifications; return how many were delivered."""
        from polykey.network.ssh import PeerError, PeerUnreachable

        now = time.time() if now is None else now
        delivered = 0
        for item_key, raw in self.store.items(OUTBOX):
            doc = json.loads(raw)
            if doc["next"] > now:
                continue
            try:
                self.peers.call(
                    decode_node_id(doc["to"]), "notifications.send", {"message": doc["message"]}
                )
            except PeerUnreachable:
                attempts = int(doc["attempts"]) + 1
                backoff = BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1]
                doc.update(attempts=attempts, next=now + backoff)
                with self.store.write() as tx:
                    tx.put(OUTBOX, item_key, json.dumps(doc).encode())
                continue
            except PeerError:
                pass  # refused for good: drop it
            else:
                delivered += 1
            with self.store.write() as tx:
                tx.delete(OUTBOX, item_key)
        return delivered

    def readdress(self, tx: Transaction, old: str, new: str) -> None:
        """Within ``tx`` (node ``old`` renewed its key to ``new``): queued notifications to
        ``old`` go to ``new``."""
        for item_key, raw in self.store.items(OUTBOX):
            doc = json.loads(raw)
            if doc.get("to") == old:
                tx.put(OUTBOX, item_key, json.dumps({**doc, "to": new}).encode())

    def read(self, unread_only: bool) -> list[dict[str, Any]]:
        out = []
        marked = []
        for item_key, raw in self.store.items(INBOX):
            doc = json.loads(raw)
            if unread_only and doc.get("read"):
                continue
            out.append(doc)
            if not doc.get("read"):
                marked.append((item_key, {**doc, "read": True}))
        if marked:
            with self.store.write() as tx:
                for item_key, doc in marked:
                    tx.put(INBOX, item_key, json.dumps(doc).encode())
        return out

    def clear(self) -> int:
        keys = self.store.keys(INBOX)
        with self.store.write() as tx:
            for item_key in keys:
                tx.delete(INBOX, item_key)
        return len(keys)

    def outbox(self) -> list[dict[str, Any]]:
        return [json.loads(raw) for _, raw in self.store.items(OUTBOX)]
