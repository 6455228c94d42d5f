"""Every reader and writer of frames and messages, held to docs/spec/frame-vectors.json.

Readers: polykey.frames and polykey.codec themselves, the agent's protocol as agent.server uses
it, a real agent process on its socket, the serving side of a `polykey` channel
(network/ssh.py), and the clients: cli/client.py and cli/fast.py against an agent played on a
real Unix socket, and network/ssh.py's PeerClient. Writers: codec.encode, the hot path's
frames.request, and what each client really sends. A vector a reader takes must give what the
vector says; one it refuses must close the connection (or fail the command cleanly), never be
taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import io
import json
import logging
import os
import re
import shutil
import socket
import sys
import tempfile
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey import codec, frames
from polykey.agent import protocol
from polykey.cli import client as agent_client
from polykey.cli import fast
from polykey.errors import PolykeyError
from polykey.ids import NodeId
from polykey.network import ssh
from tests.agent.test_agent_process import AgentHandle, make_node, start_agent

VECTORS: dict[str, Any] = json.loads(
    (Path(__file__).parents[2] / "docs" / "spec" / "frame-vectors.json").read_text()
)
REQUESTS: list[dict[str, Any]] = VECTORS["requests"]
REPLIES: list[dict[str, Any]] = VECTORS["replies"]
TAKEN_REQUESTS = [v for v in REQUESTS if "refused" not in v]
TAKEN_REPLIES = [v for v in REPLIES if "refused" not in v]
PEER = NodeId(bytes(range(32)))


def named(vectors: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in vectors]


def body(vector: dict[str, Any]) -> bytes:
    """A vector's body, as bytes on the wire."""
    if "body_hex" in vector:
        return bytes.fromhex(vector["body_hex"])
    text = vector["body"]
    if isinstance(text, list):
        text = "".join(piece * times for piece, times in text)
    return str(text).encode("utf-8")


def value(doc: Any) -> Any:
    """A vector's expected value: {"$hex": ...} as bytes."""
    if isinstance(doc, dict):
        if set(doc) == {"$hex"}:
            return bytes.fromhex(doc["$hex"])
        return {k: value(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [value(v) for v in doc]
    return doc


def message(vector: dict[str, Any]) -> dict[str, Any]:
    """A taken vector's message with its bytes decoded (what a writer is given)."""
    decoded = codec.from_wire(codec.decode(body(vector)))
    assert isinstance(decoded, dict)
    return decoded


def sent_by_clients(vector: dict[str, Any]) -> bool:
    """A request a client writes: canonical, id 1, with params."""
    wire = json.loads(body(vector))
    return bool(vector.get("canonical")) and wire.get("id") == 1 and "params" in wire


def read_request(data: bytes) -> tuple[Any, str, dict[str, Any]]:
    """A request as both servers read it: the body, JSON-RPC 2.0, then its bytes."""
    request_id, method, params = codec.check_request(codec.decode(data))
    return request_id, method, codec.from_wire(params)


def read_reply(data: bytes) -> tuple[Any, dict[str, Any] | None]:
    """A reply to request 1 as both clients read it."""
    result, error = codec.check_reply(codec.decode(data), 1)
    return (None if error is not None else codec.from_wire(result)), error


def test_the_vectors_limits_are_the_limits_of_the_code() -> None:
    limits = VECTORS["limits"]
    assert limits["agent"] == frames.AGENT_MAX == protocol.MAX_FRAME == agent_client.MAX_FRAME
    assert limits["peer hello"] == ssh.HELLO_FRAME
    assert limits["peer request"] == ssh.SMALL_FRAME
    assert limits["peer push"] == limits["peer reply"] == ssh.MAX_FRAME
    assert agent_client.HEADER.size == protocol.HEADER.size == frames.HEADER_SIZE
    assert agent_client.SESSION_INVALID == protocol.SESSION_INVALID


# --- frames -------------------------------------------------------------------------------------


class Stream:
    """A blocking stream over bytes, as frames.read reads a socket (a few bytes at a time)."""

    def __init__(self, data: bytes, step: int = 3) -> None:
        self.data, self.at, self.step = data, 0, step

    def recv(self, n: int) -> bytes:
        chunk = self.data[self.at : self.at + min(n, self.step)]
        self.at += len(chunk)
        return chunk


@pytest.mark.parametrize("vector", named(VECTORS["frames"]))
def test_frames_reads_each_frame_vector(vector: dict[str, Any]) -> None:
    stream = Stream(bytes.fromhex(vector["hex"]))
    limit = VECTORS["limits"][vector["limit"]]
    if "bodies" in vector:
        assert [frames.read(stream.recv, limit).hex() for _ in vector["bodies"]] == vector["bodies"]
        assert stream.at == len(stream.data)  # each frame read exactly
    elif "size" in vector:
        header = frames.read_exactly(stream.recv, frames.HEADER_SIZE)
        assert frames.size(header, limit) == vector["size"]
    else:
        with pytest.raises(frames.FrameError, match=f"^{re.escape(vector['refused'])}"):
            frames.read(stream.recv, limit)
        if vector["refused"] != "cut short":
            assert stream.at == frames.HEADER_SIZE  # refused from the length alone


@pytest.mark.parametrize("vector", named([v for v in VECTORS["frames"] if "bodies" in v]))
def test_frames_writes_each_frame_vector(vector: dict[str, Any]) -> None:
    limit = VECTORS["limits"][vector["limit"]]
    written = b"".join(frames.frame(bytes.fromhex(b), limit) for b in vector["bodies"])
    assert written.hex() == vector["hex"]


def test_a_frame_over_its_limit_is_not_written() -> None:
    limit = VECTORS["limits"]["peer hello"]
    assert len(frames.frame(b"x" * limit, limit)) == limit + 4
    with pytest.raises(frames.FrameError, match=f"a frame of {limit + 1} bytes"):
        frames.frame(b"x" * (limit + 1), limit)


@pytest.mark.parametrize(
    "vector", named([v for v in VECTORS["frames"] if "bodies" not in v or len(v["bodies"]) == 1])
)
def test_the_peer_channels_reader_takes_and_refuses_the_frame_vectors(
    vector: dict[str, Any],
) -> None:
    """network/ssh.py's `_read_frame` (both sides of a channel read frames with it)."""

    async def run() -> None:
        reader = asyncio.StreamReader()
        reader.feed_data(bytes.fromhex(vector["hex"]))
        reader.feed_eof()
        limit = VECTORS["limits"][vector["limit"]]
        if "bodies" in vector:
            data = bytes.fromhex(vector["bodies"][0])
            try:
                expected: Any = codec.decode(data)
            except codec.BadMessage as exc:
                with pytest.raises(codec.BadMessage, match=str(exc)):
                    await ssh._read_frame(reader, limit)
            else:
                assert await ssh._read_frame(reader, limit) == expected
        elif "size" in vector or vector["refused"] == "cut short":  # it waits for the rest
            with pytest.raises(asyncio.IncompleteReadError):
                await ssh._read_frame(reader, limit)
        else:
            with pytest.raises(frames.FrameError, match=f"^{re.escape(vector['refused'])}"):
                await ssh._read_frame(reader, limit)

    asyncio.run(run())


# --- requests: the readers ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", named(REQUESTS))
def test_codec_and_the_agents_protocol_read_each_request_vector(vector: dict[str, Any]) -> None:
    data = body(vector)
    if "refused" in vector:
        with pytest.raises(codec.BadMessage, match=f"^{re.escape(vector['refused'])}$"):
            read_request(data)
        with pytest.raises(protocol.FrameError, match=f"^{re.escape(vector['refused'])}$"):
            protocol.from_wire(protocol.check_request(protocol.decode_body(data))[2])
        return
    request_id, method, params = read_request(data)
    assert (request_id, method) == (vector["id"], vector["method"])
    if vector["params"] != "nested":
        assert params == value(vector["params"])
    assert protocol.check_request(protocol.decode_body(data))[:2] == (request_id, method)


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentHandle]:
    node = tmp_path_factory.mktemp("vectors") / "node.pk"
    make_node(node)
    base = Path(tempfile.mkdtemp(prefix="pkv-", dir="/tmp"))
    handle = start_agent(node, base)
    try:
        yield handle
    finally:
        handle.stop()
        shutil.rmtree(base, ignore_errors=True)


def _exchange(path: Path, data: bytes) -> bytes:
    """Send ``data``; all that comes back until the agent closes or one reply is whole."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as s:
        s.settimeout(15)
        s.connect(str(path))
        with contextlib.suppress(BrokenPipeError, ConnectionResetError):
            s.sendall(data)
        received = b""
        while len(received) < 4 or len(received) < 4 + int.from_bytes(received[:4], "big"):
            try:
                chunk = s.recv(65536)
            except ConnectionResetError:
                break
            if not chunk:
                break
            received += chunk
        return received


@pytest.mark.parametrize("vector", named(REQUESTS))
def test_a_real_agent_answers_the_requests_it_takes_and_closes_on_the_others(
    agent: AgentHandle, vector: dict[str, Any]
) -> None:
    log = agent.folder / "agent.log"
    before = log.read_text().count("closed a connection")
    received = _exchange(agent.folder / "agent.sock", frames.frame(body(vector)))
    if "refused" in vector:
        assert received == b""
        lines = [line for line in log.read_text().splitlines() if "closed a connection" in line]
        assert len(lines) == before + 1
        assert lines[-1].endswith(f"closed a connection: {vector['refused']}"), lines[-1]
        return
    reply = codec.decode(frames.read(Stream(received, 1 << 20).recv, frames.AGENT_MAX))
    assert reply["jsonrpc"] == "2.0" and reply["id"] == vector["id"]
    assert "result" in reply or "error" in reply  # a session error, an unknown method: answered


class _Stdout:
    def __init__(self) -> None:
        self.data = bytearray()

    def write(self, data: bytes) -> None:
        self.data += data

    async def drain(self) -> None:
        return None


class _Process:
    """What the channel code uses of an asyncssh server process."""

    def __init__(self, stdin: bytes) -> None:
        self.stdin = asyncio.StreamReader()
        self.stdin.feed_data(stdin)
        self.stdin.feed_eof()
        self.stdout = _Stdout()
        self.exited: int | None = None

    def exit(self, status: int) -> None:
        self.exited = status


HELLO = frames.frame(frames.request("peer.hello", {"version": ssh.PROTOCOL_VERSION}, request_id=0))


def serve_channel(stream: bytes) -> tuple[list[dict[str, Any]], list[tuple[str, Any]]]:
    """The replies of a `polykey` channel (network/ssh.py) fed ``stream`` after a hello, and the
    requests its handler was given."""
    handled: list[tuple[str, Any]] = []

    async def handler(peer: NodeId, method: str, params: dict[str, Any]) -> dict[str, Any]:
        handled.append((method, params))
        return {"version": 1} if method == "peer.hello" else {"ok": True}

    async def run() -> _Process:
        proc = _Process(HELLO + stream)
        opened = asyncio.get_running_loop().time()
        await ssh._rpc_channel(proc, PEER, handler, ssh.PeerLimits(), 60.0, opened)  # type: ignore[arg-type]
        return proc

    proc = asyncio.run(run())
    assert proc.exited == 0  # the channel is closed, whatever came
    out, replies = Stream(bytes(proc.stdout.data), 1 << 20), []
    while out.at < len(out.data):
        replies.append(codec.decode(frames.read(out.recv, ssh.MAX_FRAME)))
    return replies, handled[1:]


@pytest.mark.parametrize("vector", named(REQUESTS))
def test_a_peer_channel_answers_the_requests_it_takes_and_closes_on_the_others(
    vector: dict[str, Any], caplog: pytest.LogCaptureFixture
) -> None:
    with caplog.at_level(logging.WARNING, logger=ssh.log.name):
        replies, handled = serve_channel(frames.frame(body(vector)))
    assert replies[0] == {"jsonrpc": "2.0", "id": 0, "result": {"version": 1}}
    if "refused" in vector:
        assert len(replies) == 1 and handled == []
        assert caplog.text.rstrip().endswith(f": {vector['refused']}"), caplog.text
        return
    assert replies[1:] == [{"jsonrpc": "2.0", "id": vector["id"], "result": {"ok": True}}]
    assert [method for method, _ in handled] == [vector["method"]]
    if vector["params"] != "nested":
        assert handled[0][1] == value(vector["params"])


# --- requests: the writers ----------------------------------------------------------------------


@pytest.mark.parametrize("vector", named([v for v in TAKEN_REQUESTS + TAKEN_REPLIES]))
def test_codec_and_the_hot_paths_encoder_write_each_canonical_vector(
    vector: dict[str, Any],
) -> None:
    data, decoded = body(vector), message(vector)
    if not vector.get("canonical"):
        assert codec.encode(decoded) != data  # the readers take what no writer makes
        return
    assert codec.encode(decoded) == data
    assert frames.json_value(decoded).encode("ascii") == data
    if sent_by_clients(vector):
        assert frames.request(decoded["method"], decoded["params"]) == data


@pytest.mark.parametrize("vector", named([v for v in TAKEN_REPLIES if v.get("canonical")]))
def test_the_agent_and_a_peer_channel_write_each_canonical_reply(vector: dict[str, Any]) -> None:
    assert protocol.encode(message(vector)) == frames.frame(body(vector))
    assert ssh._frame(message(vector)) == frames.frame(body(vector))


@pytest.mark.parametrize("vector", named([v for v in REPLIES if "raw" in v]))
def test_the_agent_writes_a_raw_reply_as_the_vector_says(vector: dict[str, Any]) -> None:
    values = [bytes.fromhex(vector["raw"])]
    assert protocol.raw_reply(values) == frames.frame(body(vector))


class FakeAgent:
    """A Unix socket that takes one connection, keeps the request frame it reads, answers
    ``reply`` (a frame's bytes, or any bytes) and closes."""

    def __init__(self, path: Path, reply: bytes) -> None:
        self.path, self.reply = path, reply
        self.requests: list[bytes] = []
        self.sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.sock.bind(str(path))
        os.chmod(path, 0o600)
        self.sock.listen(1)
        self.sock.settimeout(15)
        self.thread = threading.Thread(target=self._serve, daemon=True)
        self.thread.start()

    def _serve(self) -> None:
        with contextlib.suppress(OSError, frames.FrameError):
            conn, _ = self.sock.accept()
            with conn:
                conn.settimeout(15)
                self.requests.append(frames.read(conn.recv, frames.AGENT_MAX))
                conn.sendall(self.reply)

    def close(self) -> None:
        self.thread.join(15)
        self.sock.close()
        self.path.unlink()


@pytest.fixture
def runtime(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    """A private runtime folder for a node (short: a socket's path is limited); the agent's
    socket goes in it."""
    base = Path(tempfile.mkdtemp(prefix="pkv-", dir="/tmp"))
    node = base / "node.pk"
    monkeypatch.setenv("PK_RUNTIME_DIR", str(base / "run"))
    monkeypatch.setenv("PK_NODE", str(node))
    monkeypatch.setenv("PK_TOKEN", "pk1.token")
    monkeypatch.delenv("PK_NO_AGENT", raising=False)
    folder = fast._folder(str(node))
    assert folder is not None
    os.makedirs(folder, mode=0o700)
    os.chmod(base / "run", 0o700)
    try:
        yield Path(folder)
    finally:
        shutil.rmtree(base, ignore_errors=True)


def _client_call(folder: Path, reply: bytes, method: str, params: dict[str, Any]) -> Any:
    """``AgentClient.call`` against a fake agent answering ``reply``: (what it returned or
    raised, the request bodies the agent got)."""
    agent = FakeAgent(folder / "agent.sock", reply)
    c = agent_client.AgentClient(folder)
    try:
        outcome: Any = c.call(method, params, token=False)
    except Exception as exc:  # the outcome is what the test looks at
        outcome = exc
    finally:
        c.close()
        agent.close()
    return outcome, agent.requests


OK_REPLY = frames.frame(b'{"jsonrpc":"2.0","id":1,"result":{}}')


@pytest.mark.parametrize("vector", named([v for v in TAKEN_REQUESTS if sent_by_clients(v)]))
def test_the_agent_client_sends_each_request_vector(runtime: Path, vector: dict[str, Any]) -> None:
    decoded = message(vector)
    outcome, sent = _client_call(runtime, OK_REPLY, decoded["method"], decoded["params"])
    assert outcome == {} and sent == [body(vector)]


@pytest.mark.parametrize("vector", named([v for v in TAKEN_REQUESTS if sent_by_clients(v)]))
def test_a_peer_client_sends_each_request_vector(vector: dict[str, Any]) -> None:
    decoded = message(vector)
    written = bytearray()

    class Writer:
        def write(self, data: bytes) -> None:
            written.extend(data)

    async def run() -> dict[str, Any]:
        reader = asyncio.StreamReader()
        reader.feed_data(OK_REPLY)
        reader.feed_eof()
        peer = ssh.PeerClient(None, Writer(), reader)  # type: ignore[arg-type]
        return await peer.call(decoded["method"], decoded["params"])

    assert asyncio.run(run()) == {}
    assert bytes(written) == frames.frame(body(vector))


def _fast(args: list[str], stdin: bytes | None = None) -> int | None:
    if stdin is not None:
        wrapper = io.TextIOWrapper(io.BytesIO(stdin))
        with contextlib.ExitStack() as stack:
            old = sys.stdin
            sys.stdin = wrapper
            stack.callback(setattr, sys, "stdin", old)
            return fast.try_fast(["secrets", *args], [])
    return fast.try_fast(["secrets", *args])


FAST_REQUESTS = [
    v
    for v in TAKEN_REQUESTS
    if sent_by_clients(v) and v["method"] in ("secrets.cat", "secrets.write")
]


@pytest.mark.parametrize("vector", named(FAST_REQUESTS))
def test_the_hot_path_sends_each_request_vector(
    runtime: Path, vector: dict[str, Any], monkeypatch: pytest.MonkeyPatch
) -> None:
    params = message(vector)["params"]
    monkeypatch.setenv("PK_TOKEN", params["token"])
    if vector["method"] == "secrets.cat":
        (vault, path), reply, stdin = params["items"][0], frames.frame(b"\x00v"), None
    else:
        vault, path, reply, stdin = params["vault"], params["path"], OK_REPLY, params["data"]
    agent = FakeAgent(runtime / "agent.sock", reply)
    try:
        assert _fast([vector["method"].split(".")[1], f"{vault}:{path}"], stdin) == 0
    finally:
        agent.close()
    assert agent.requests == [body(vector)]


# --- replies: the readers -----------------------------------------------------------------------


@pytest.mark.parametrize("vector", named(REPLIES))
def test_codec_reads_each_reply_vector(vector: dict[str, Any]) -> None:
    if "refused" in vector:
        with pytest.raises(codec.BadMessage, match=f"^{re.escape(vector['refused'])}$"):
            read_reply(body(vector))
        return
    result, error = read_reply(body(vector))
    if "error" in vector:
        assert (result, error) == (None, vector["error"])
    else:
        assert (result, error) == (value(vector["result"]), None)


@pytest.mark.parametrize("vector", named(REPLIES))
def test_the_agent_client_reads_each_reply_vector(runtime: Path, vector: dict[str, Any]) -> None:
    outcome, _ = _client_call(runtime, frames.frame(body(vector)), "vaults.list", {})
    if "refused" in vector:  # the agent got the request: never run again on the node file
        assert isinstance(outcome, agent_client.AgentBadReply), outcome
        assert outcome.exit_code == 46
        assert vector["refused"] in outcome.message
    elif "error" in vector:
        error = vector["error"]
        assert isinstance(outcome, agent_client.AgentError), outcome
        assert outcome.message == error["message"]
        assert outcome.exit_code == error.get("data", {}).get("exit_code", 1)
        kind = "session" if error["code"] == protocol.SESSION_INVALID else None
        assert outcome.kind == (kind or error.get("data", {}).get("type", ""))
    else:
        assert outcome == value(vector["result"])


def test_the_agent_client_reads_a_frame_over_the_limit_or_cut_short_as_the_agent_dying(
    runtime: Path,
) -> None:
    for vector in VECTORS["frames"]:
        if vector["limit"] != "agent" or "refused" not in vector:
            continue
        outcome, _ = _client_call(runtime, bytes.fromhex(vector["hex"]), "vaults.list", {})
        assert type(outcome) is agent_client.AgentDied, (vector["name"], outcome)


@pytest.mark.parametrize("vector", named(REPLIES))
def test_the_hot_path_prints_a_raw_reply_and_steps_aside_for_any_other(
    runtime: Path, vector: dict[str, Any], capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    agent = FakeAgent(runtime / "agent.sock", frames.frame(body(vector)))
    try:
        code = _fast(["cat", "work:db/password"])
    finally:
        agent.close()
    out = capfdbinary.readouterr().out
    if "raw" in vector:
        assert (code, out) == (0, bytes.fromhex(vector["raw"]))
    else:  # the full CLI runs it and says what went wrong; a read changes nothing
        assert (code, out) == (None, b"")


@pytest.mark.parametrize("vector", named(REPLIES))
def test_the_hot_path_takes_a_write_as_done_only_on_a_result(
    runtime: Path, vector: dict[str, Any]
) -> None:
    """It reads no JSON: a reply that begins as the agent writes a result is one; anything
    else steps aside (the full CLI then asks again, and reports)."""
    agent = FakeAgent(runtime / "agent.sock", frames.frame(body(vector)))
    try:
        code = _fast(["write", "work:db/password"], b"value")
    finally:
        agent.close()
    done = body(vector).startswith(b'{"jsonrpc":"2.0","id":1,"result":')
    assert code == (0 if done else None)
    if "result" in vector and vector.get("canonical"):
        assert code == 0


def test_the_hot_path_reads_a_frame_over_the_limit_or_cut_short_as_the_agent_dying(
    runtime: Path, capfdbinary: pytest.CaptureFixture[bytes]
) -> None:
    for vector in VECTORS["frames"]:
        if vector["limit"] != "agent" or "refused" not in vector:
            continue
        agent = FakeAgent(runtime / "agent.sock", bytes.fromhex(vector["hex"]))
        try:
            assert _fast(["cat", "work:db/password"]) is None  # a read: the full CLI runs
        finally:
            agent.close()
        agent = FakeAgent(runtime / "agent.sock", bytes.fromhex(vector["hex"]))
        try:
            assert _fast(["write", "work:db/password"], b"value") == 46  # sent: never again
        finally:
            agent.close()
        captured = capfdbinary.readouterr()
        assert captured.out == b""
        assert captured.err.startswith(b"pk: error: The agent stopped before it answered")


@pytest.mark.parametrize("vector", named(REPLIES))
def test_a_peer_client_reads_each_reply_vector(vector: dict[str, Any]) -> None:
    class Writer:
        def write(self, data: bytes) -> None:
            return None

        def close(self) -> None:
            return None

    async def run() -> Any:
        reader = asyncio.StreamReader()
        reader.feed_data(frames.frame(body(vector)))
        reader.feed_eof()
        peer = ssh.PeerClient(None, Writer(), reader)  # type: ignore[arg-type]
        try:
            return await peer.call("vaults.scan", {})
        except PolykeyError as exc:
            return exc

    outcome = asyncio.run(run())
    if "refused" in vector:  # unreachable (50) or refused (51): never taken
        assert isinstance(outcome, ssh.PeerUnreachable | ssh.PeerError), outcome
    elif "error" in vector:
        assert isinstance(outcome, ssh.PeerError) and outcome.detail == vector["error"]["message"]
    else:
        assert outcome == value(vector["result"])
