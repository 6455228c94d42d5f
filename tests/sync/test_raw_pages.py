"""Raw pages (docs/spec/peer-protocol.md, "Raw pages"): a paged fetch that asks with
``"raw": true`` gets each page as a JSON head and the objects' bytes, not JSON with base64.

The vectors (docs/spec/frame-vectors.json, "pages") hold both readers and the writer to the
bytes; over real SSH on loopback, a client that asks for raw pages and one that does not (a node
of before) fetch the same objects from the same server, page by page.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from polykey import codec, frames
from polykey.crypto.signing import SigningKey
from polykey.errors import PolykeyError
from polykey.ids import NodeId
from polykey.network import ssh
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.sync import client as sync_client
from polykey.sync import server

VECTORS: list[dict[str, Any]] = json.loads(
    (Path(__file__).parents[2] / "docs" / "spec" / "frame-vectors.json").read_text()
)["pages"]
TAKEN = [v for v in VECTORS if "refused" not in v]


def named(vectors: list[dict[str, Any]]) -> list[Any]:
    return [pytest.param(v, id=v["name"]) for v in vectors]


def value(doc: Any) -> Any:
    """A vector's expected value: {"$hex": ...} as bytes."""
    if isinstance(doc, dict):
        if set(doc) == {"$hex"}:
            return bytes.fromhex(doc["$hex"])
        return {k: value(v) for k, v in doc.items()}
    if isinstance(doc, list):
        return [value(v) for v in doc]
    return doc


@pytest.mark.parametrize("vector", named(VECTORS))
def test_the_page_reader_takes_or_refuses_each_vector(vector: dict[str, Any]) -> None:
    body = bytes.fromhex(vector["body_hex"])
    if "refused" in vector:
        with pytest.raises(codec.BadMessage) as refused:
            codec.decode_page(body, 1)
        assert str(refused.value) == vector["refused"]
    else:
        assert codec.decode_page(body, 1) == value(vector["result"])


@pytest.mark.parametrize("vector", named(TAKEN))
def test_the_page_writer_writes_each_taken_vector_byte_for_byte(vector: dict[str, Any]) -> None:
    assert codec.encode_page(1, value(vector["result"])).hex() == vector["body_hex"]


class _Writer:
    def write(self, data: bytes) -> None:
        return None

    def close(self) -> None:
        return None


def _client_reads(body: bytes, params: dict[str, Any]) -> Any:
    """What a PeerClient makes of ``body`` as the reply to request 1 (``params`` sent)."""

    async def run() -> Any:
        reader = asyncio.StreamReader()
        reader.feed_data(frames.frame(body))
        reader.feed_eof()
        peer = ssh.PeerClient(None, _Writer(), reader)  # type: ignore[arg-type]
        try:
            return await peer.call("vaults.fetch", params)
        except PolykeyError as exc:
            return exc

    return asyncio.run(run())


@pytest.mark.parametrize("vector", named(VECTORS))
def test_a_peer_client_that_asked_for_raw_pages_reads_each_vector(vector: dict[str, Any]) -> None:
    outcome = _client_reads(bytes.fromhex(vector["body_hex"]), {"vault": "work", "raw": True})
    if "refused" in vector:
        assert isinstance(outcome, ssh.PeerUnreachable), outcome
        assert outcome.exit_code == 50
    else:
        assert outcome == value(vector["result"])


@pytest.mark.parametrize("vector", named(TAKEN))
def test_a_peer_client_that_did_not_ask_refuses_a_raw_page(vector: dict[str, Any]) -> None:
    outcome = _client_reads(bytes.fromhex(vector["body_hex"]), {"vault": "work"})
    assert isinstance(outcome, ssh.PeerUnreachable), outcome


# --- both clients against one server, over SSH on loopback -------------------------------------

ALICE = SigningKey(bytes([7]) * 32)
BOB = SigningKey(bytes([8]) * 32)


class Served:
    """A node serving its peers on loopback (its PeerService behind network/ssh.py), with a
    loop of its own for the clients."""

    def __init__(self, tmp: Path) -> None:
        self.node, _ = Node.bootstrap(tmp / "a.pk", b"a", kdf=FAST_INSECURE_KDF, allow_weak=True)
        vault = self.node.vaults.create("work")
        for i in range(12):
            vault.write(f"team{i % 3}/s{i}", f"value {i}".encode() * (i + 1))
        vault.write("big", bytes(range(256)) * 64)  # 16 KiB: in parts, below
        self.node.acl.grant(vault.id, NodeId(BOB.public), ["clone", "pull"])
        self.service = server.PeerService(
            self.node.vaults, self.node.acl, self.node.node_id, self.node.notifications
        )
        self.loop = asyncio.new_event_loop()
        threading.Thread(target=self.loop.run_forever, daemon=True).start()
        key = ssh.ssh_key(self.node.key.signing.openssh_private_pem())
        self.lock = threading.Lock()

        async def handle(peer: NodeId, method: str, params: dict[str, Any]) -> dict[str, Any]:
            with self.lock:  # one node thread, as the agent's
                return self.service.handle(peer, method, params)

        self.acceptor = self.run(ssh.serve("127.0.0.1", 0, key, handle))
        self.port = int(self.acceptor.sockets[0].getsockname()[1])

    def run(self, job: Any) -> Any:
        return asyncio.run_coroutine_threadsafe(job, self.loop).result(60)

    def session(self, job: Any) -> Any:
        async def go() -> Any:
            key = ssh.ssh_key(BOB.openssh_private_pem())
            client = await ssh.PeerClient.connect(key, self.node.node_id, "127.0.0.1", self.port)
            try:
                return await job(client)
            finally:
                client.close()

        return self.run(go())

    def close(self) -> None:
        async def stop() -> None:
            self.acceptor.close()
            await self.acceptor.wait_closed()

        self.run(stop())
        self.loop.call_soon_threadsafe(self.loop.stop)
        self.node.close()


@pytest.fixture(scope="module")
def served(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    one = Served(tmp_path_factory.mktemp("raw-pages"))
    try:
        yield one
    finally:
        one.close()


async def _old_client(client: ssh.PeerClient) -> tuple[list[bytes], int]:
    """A node of before raw pages: it asks without ``raw`` and gathers the JSON pages."""
    params: dict[str, Any] = {"vault": "work", "haves": [], "at": [0, 0]}
    objects: list[bytes] = []
    part = b""
    pages = 0
    while True:
        reply = await client.call("vaults.fetch", params)
        pages += 1
        objects.extend(reply["objects"])
        if "part" in reply:
            part += reply["part"]
            if len(part) == reply["part_of"]:
                objects.append(part)
                part = b""
        if "next" not in reply:
            return objects, pages
        params = {**params, "at": reply["next"], "head": reply["head"]}


def test_both_clients_fetch_the_same_pages_over_ssh(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "PAGE_OBJECTS", 5)  # several pages
    monkeypatch.setattr(server, "PAGE_BYTES", 4096)  # the 16 KiB secret in parts
    sent: list[bytes] = []
    encode_page = codec.encode_page

    def counted(request_id: int | str, result: dict[str, Any]) -> bytes:
        sent.append(body := encode_page(request_id, result))
        return body

    monkeypatch.setattr(codec, "encode_page", counted)
    old, pages = served.session(_old_client)
    assert not sent  # the old client got JSON pages
    new = served.session(lambda c: sync_client.fetch(c, "work", []))
    assert len(sent) == pages > 5  # the new one as many raw pages, parts among them
    assert all(codec.is_page(body) for body in sent)
    assert new["objects"] == old and len(old) == len(set(old))
    assert any(len(o) > 4096 for o in old)


def test_an_unpaged_fetch_that_asks_for_raw_pages_still_gets_json(served: Served) -> None:
    reply = served.session(lambda c: c.call("vaults.fetch", {"vault": "work", "raw": True}))
    assert "next" not in reply and len(reply["objects"]) > 12


def test_the_first_page_is_smaller_so_the_asker_starts_sooner(
    served: Served, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(server, "PAGE_OBJECTS", 5)
    monkeypatch.setattr(server, "FIRST_PAGE_OBJECTS", 3)
    peer = NodeId(BOB.public)
    params: dict[str, Any] = {"vault": "work", "at": [0, 0], "raw": True}
    first = served.service.handle(peer, "vaults.fetch", params)
    assert isinstance(first, codec.Page) and len(first["objects"]) == 3
    later = {**params, "at": first["next"], "head": first["head"]}
    assert len(served.service.handle(peer, "vaults.fetch", later)["objects"]) == 5
