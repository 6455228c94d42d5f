"""Identifiers: the NodeId and its text form.

A NodeId is the 32-byte Ed25519 public key of a node. Its text form is multibase base32hex:
the prefix ``v`` then the lowercase RFC 4648 base32hex alphabet without padding (53 characters
in all), the notation the original Polykey uses. Decoding is strict: a text that does not
re-encode to itself (uppercase, padding, non-zero trailing bits, wrong length) is refused.
"""

from __future__ import annotations

import base64
import binascii
from typing import NewType

from polykey.errors import InvalidNodeId

NodeId = NewType("NodeId", bytes)
"""The raw 32-byte Ed25519 public key of a node."""

NODE_ID_BYTES = 32
_PREFIX = "v"
_TEXT_LENGTH = 1 + 52


def node_id_from_bytes(raw: bytes) -> NodeId:
    if len(raw) != NODE_ID_BYTES:
        raise InvalidNodeId(f"expected {NODE_ID_BYTES} bytes, got {len(raw)}")
    return NodeId(bytes(raw))


def encode_node_id(node_id: NodeId) -> str:
    """The text form of a NodeId: ``v`` + base32hex, lowercase, unpadded."""
    return _PREFIX + base64.b32hexencode(node_id).decode("ascii").rstrip("=").lower()


def decode_node_id(text: str) -> NodeId:
    """Parse the text form of a NodeId, refusing every non-canonical spelling."""
    shown = text if len(text) <= 80 else text[:77] + "..."
    if len(text) != _TEXT_LENGTH or not text.startswith(_PREFIX):
        raise InvalidNodeId(repr(shown))
    body = text[1:]
    if body != body.lower():
        raise InvalidNodeId(repr(shown))
    try:
        raw = base64.b32hexdecode(body.upper() + "====")
    except (binascii.Error, ValueError):
        raise InvalidNodeId(repr(shown)) from None
    if len(raw) != NODE_ID_BYTES or encode_node_id(NodeId(raw)) != text:
        raise InvalidNodeId(repr(shown))
    return NodeId(raw)
