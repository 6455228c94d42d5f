"""The agent's wire format: frames, JSON-RPC 2.0 requests, bytes as {"$b64": ...}."""

from __future__ import annotations

import json
from typing import Any

import pytest

from polykey.agent import protocol
from polykey.agent.protocol import FrameError


def test_bytes_nested_in_dicts_and_lists_round_trip() -> None:
    value: dict[str, Any] = {
        "data": b"\x00\xff binary \n",
        "empty": b"",
        "items": [["v", "p"], b"in a list", {"deeper": [b"\x01", {"x": b"y" * 1000}]}],
        "text": "unicode \u00e9\u6f22 stays text",
        "number": 42,
        "flag": True,
        "nothing": None,
    }
    wire = protocol.to_wire(value)
    text = json.dumps(wire)  # the wire form is plain JSON
    assert "binary" not in text  # bytes never travel as they are
    assert protocol.from_wire(json.loads(text)) == value


def test_bytes_travel_as_base64_objects() -> None:
    assert protocol.to_wire(b"hi") == {"$b64": "aGk="}
    assert protocol.to_wire(bytearray(b"hi")) == {"$b64": "aGk="}
    assert protocol.to_wire((b"a", "b")) == [{"$b64": "YQ=="}, "b"]
    assert protocol.from_wire({"$b64": "aGk="}) == b"hi"


def test_an_object_with_more_than_the_b64_key_stays_an_object() -> None:
    value = {"$b64": "aGk=", "other": 1}
    assert protocol.from_wire(value) == value
    assert protocol.from_wire({"$b64": 5}) == {"$b64": 5}


@pytest.mark.parametrize(
    "bad",
    [
        {"$b64": "!!!!"},
        {"$b64": "aGk"},  # missing padding
        {"$b64": "aG k="},
        {"$b64": "aGk=\n"},
        [1, {"$b64": "***"}],
        {"params": {"data": {"$b64": "not base64"}}},
    ],
)
def test_bad_base64_is_a_frame_error(bad: Any) -> None:
    with pytest.raises(FrameError, match="bad base64"):
        protocol.from_wire(bad)


def test_encode_prefixes_the_body_with_its_length_and_decodes_back() -> None:
    message = {"jsonrpc": "2.0", "id": 7, "method": "vaults.list", "params": {"x": "\u00e9"}}
    frame = protocol.encode(message)
    (size,) = protocol.HEADER.unpack(frame[:4])
    assert size == len(frame) - 4
    assert protocol.decode_body(frame[4:]) == message


@pytest.mark.parametrize(
    "body",
    [b"not json", b"[1, 2, 3]", b'"a string"', b"42", b"null", b"\xff\xfe{}", b"", b'{"a": '],
)
def test_a_body_that_is_not_a_json_object_is_a_frame_error(body: bytes) -> None:
    with pytest.raises(FrameError):
        protocol.decode_body(body)


def test_a_valid_request_gives_its_id_method_and_params() -> None:
    request = {"jsonrpc": "2.0", "id": 3, "method": "secrets.cat", "params": {"items": []}}
    assert protocol.check_request(request) == (3, "secrets.cat", {"items": []})
    no_params = {"jsonrpc": "2.0", "id": "a", "method": "agent.status"}
    assert protocol.check_request(no_params) == ("a", "agent.status", {})
    notification = {"jsonrpc": "2.0", "method": "agent.status", "params": {}}
    assert protocol.check_request(notification) == (None, "agent.status", {})


@pytest.mark.parametrize(
    "request_doc",
    [
        pytest.param({"jsonrpc": "1.0", "id": 1, "method": "m"}, id="version-1.0"),
        pytest.param({"jsonrpc": 2.0, "id": 1, "method": "m"}, id="version-number"),
        pytest.param({"id": 1, "method": "m"}, id="no-version"),
        pytest.param({"jsonrpc": "2.0", "id": 1}, id="no-method"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": 5}, id="method-number"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": None}, id="method-null"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": "m", "params": [1]}, id="params-list"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": "m", "params": "x"}, id="params-text"),
        pytest.param({"jsonrpc": "2.0", "id": 1, "method": "m", "params": None}, id="params-null"),
        pytest.param({"jsonrpc": "2.0", "id": {"a": 1}, "method": "m"}, id="id-object"),
        pytest.param({"jsonrpc": "2.0", "id": [1], "method": "m"}, id="id-list"),
    ],
)
def test_a_request_that_is_not_json_rpc_2_is_a_frame_error(request_doc: dict[str, Any]) -> None:
    with pytest.raises(FrameError):
        protocol.check_request(request_doc)


def test_the_client_and_the_agent_agree_on_the_frame_limits() -> None:
    from polykey.cli import client

    assert client.MAX_FRAME == protocol.MAX_FRAME == 192 * 1024 * 1024
    assert client.HEADER.format == protocol.HEADER.format
    assert client.SESSION_INVALID == protocol.SESSION_INVALID


def test_a_deeply_nested_body_is_a_frame_error() -> None:
    with pytest.raises(FrameError, match="nested too deep"):
        protocol.decode_body(b"[" * 100_000 + b"]" * 100_000)


@pytest.mark.parametrize(
    "body",
    [
        b'{"params":' + b"[" * 500 + b"]" * 500 + b"}",
        b'{"params":' + b'{"a":' * 500 + b"1" + b"}" * 500 + b"}",
        b'{"id":' + b"[" * 900 + b"]" * 900 + b"}",
    ],
    ids=["list-500", "dict-500", "list-900"],
)
def test_a_body_json_loads_accepts_but_too_deep_to_walk_is_a_frame_error(body: bytes) -> None:
    json.loads(body)  # within what json.loads takes
    with pytest.raises(FrameError, match="nested too deep"):
        protocol.decode_body(body)


def test_from_wire_refuses_too_deep_a_document_without_recursing_past_it() -> None:
    from polykey.codec import MAX_DEPTH, within_depth

    deep: Any = [b"x"]
    for _ in range(MAX_DEPTH - 1):
        deep = [deep]
    wire = protocol.to_wire(deep)  # MAX_DEPTH lists and the {"$b64"} object inside
    assert not within_depth(wire) and within_depth(wire, MAX_DEPTH + 1)
    with pytest.raises(FrameError, match="nested too deep"):
        protocol.from_wire(wire)
    assert protocol.from_wire(wire[0]) == deep[0]  # one level less: fine
    hostile = json.loads(b'{"a":' * 900 + b"1" + b"}" * 900)
    with pytest.raises(FrameError, match="nested too deep"):
        protocol.from_wire(hostile)


def test_within_depth_counts_lists_and_objects() -> None:
    from polykey.codec import within_depth

    assert within_depth(1, 0) and within_depth("text", 0)
    assert within_depth([], 1) and not within_depth([], 0)
    assert within_depth({"a": [1, {"b": 2}]}, 3) and not within_depth({"a": [1, {"b": 2}]}, 2)
    deep: Any = []
    for _ in range(100_000):
        deep = [deep]
    assert not within_depth(deep)  # no recursion, whatever the depth
