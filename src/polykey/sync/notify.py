"""Notifications between nodes: an inbox, and an outbox the agent retries with backoff.

Inbox: mutable namespace ``notifications/inbox`` (key: time-ordered id; value: JSON
{"from", "message", "time", "read"}). Outbox: ``notifications/outbox`` (JSON {"to", "message",
"time", "attempts", "next"}). A node accepts notifications only from nodes it knows (its node
graph) or has granted something; messages are at most 4 KiB and the inbox keeps the newest 1,000.
"""

from __future__ import annotations

import json
import os
import time
from typing import Any

from polykey.errors import InvalidInput, PolykeyError
from polykey.ids import NodeId, decode_node_id, encode_node_id
from polykey.keys.root import RootKey
from polykey.network.graph import GRAPH
from polykey.store.nodefile import NodeFile
from polykey.store.records import Namespace
from polykey.trust.acl import ACL

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


def receive(store: NodeFile, sender: NodeId, message: object) -> dict[str, Any]:
    """Store an incoming notification from an authenticated peer."""
    if not isinstance(message, str):
        raise InvalidInput("message must be text")
    check_message(message)
    sender_text = encode_node_id(sender)
    known = store.get(GRAPH, sender_text.encode()) is not None or any(
        sender_text in json.loads(v) for _, v in store.items(ACL)
    )
    if not known:
        raise NotificationRefused("this node does not know the sender")
    doc = {"from": sender_text, "message": message, "time": int(time.time()), "read": False}
    with store.write() as tx:
        tx.put(INBOX, _new_key(), json.dumps(doc).encode())
        keys = store.keys(INBOX)
        for old in keys[: max(0, len(keys) + 1 - MAX_INBOX)]:
            tx.delete(INBOX, old)
    return {"received": True}


def send(store: NodeFile, key: RootKey, to: NodeId, message: str) -> dict[str, Any]:
    """Deliver now; when the node cannot be reached, keep it in the outbox for the agent."""
    from polykey.network.ssh import PeerUnreachable
    from polykey.sync.fetch import remote

    check_message(message)
    try:
        remote(store, key, to, lambda c: c.call("notifications.send", {"message": message}))
    except PeerUnreachable:
        doc = {
            "to": encode_node_id(to),
            "message": message,
            "time": int(time.time()),
            "attempts": 1,
            "next": time.time() + BACKOFF_S[0],
        }
        with store.write() as tx:
            tx.put(OUTBOX, _new_key(), json.dumps(doc).encode())
        return {"delivered": False, "queued": True}
    return {"delivered": True, "queued": False}


def deliver_outbox(store: NodeFile, key: RootKey, now: float | None = None) -> int:
    """Retry due notifications; return how many were delivered."""
    from polykey.network.ssh import PeerError, PeerUnreachable
    from polykey.sync.fetch import remote

    now = time.time() if now is None else now
    delivered = 0
    for item_key, raw in store.items(OUTBOX):
        doc = json.loads(raw)
        if doc["next"] > now:
            continue
        message = str(doc["message"])

        async def deliver(client: Any, message: str = message) -> Any:
            return await client.call("notifications.send", {"message": message})

        try:
            remote(store, key, decode_node_id(doc["to"]), deliver)
        except PeerUnreachable:
            attempts = int(doc["attempts"]) + 1
            doc.update(attempts=attempts, next=now + BACKOFF_S[min(attempts, len(BACKOFF_S)) - 1])
            with store.write() as tx:
                tx.put(OUTBOX, item_key, json.dumps(doc).encode())
            continue
        except PeerError:
            pass  # refused for good: drop it
        else:
            delivered += 1
        with store.write() as tx:
            tx.delete(OUTBOX, item_key)
    return delivered


def read(store: NodeFile, unread_only: bool) -> list[dict[str, Any]]:
    out = []
    marked = []
    for item_key, raw in store.items(INBOX):
        doc = json.loads(raw)
        if unread_only and doc.get("read"):
            continue
        out.append(doc)
        if not doc.get("read"):
            marked.append((item_key, {**doc, "read": True}))
    if marked:
        with store.write() as tx:
            for item_key, doc in marked:
                tx.put(INBOX, item_key, json.dumps(doc).encode())
    return out


def clear(store: NodeFile) -> int:
    keys = store.keys(INBOX)
    with store.write() as tx:
        for item_key in keys:
            tx.delete(INBOX, item_key)
    return len(keys)


def outbox(store: NodeFile) -> list[dict[str, Any]]:
    return [json.loads(raw) for _, raw in store.items(OUTBOX)]
