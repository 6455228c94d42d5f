"""A history larger than one frame travels in pages (docs/spec/peer-protocol.md, "Paged fetch").

Before paging, a vault with three 25 MB secrets could not be cloned at all ("the connection
broke (ValueError)": one reply frame held the whole history). Now pages of at most 8 MiB of
objects travel, a secret larger than a page in parts; a hostile page sequence is refused.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Callable
from typing import Any

import pytest

from polykey.sync import client as sync_client
from polykey.sync.checks import UpdateRefused
from polykey.sync.server import PAGE_BYTES
from tests.sync.test_share import Pair, pair  # noqa: F401 - the fixture


def _big(seed: int, size: int) -> bytes:
    """Incompressible bytes, made quickly."""
    block = hashlib.sha512(str(seed).encode()).digest() * (1 << 14)  # 1 MiB
    return (block * (size // len(block) + 1))[:size]


def test_a_history_of_three_25_mb_secrets_clones_and_pulls(pair: Pair) -> None:  # noqa: F811
    values = [_big(i, 25_000_000) for i in range(3)]
    for i, value in enumerate(values):
        pair.a("secrets", "write", f"work:big/{i}", stdin=value)
    pair.b("vaults", "clone", pair.alice_id, "work", "mine")
    for i, value in enumerate(values):
        out = bob_cat(pair, f"mine:big/{i}")
        assert hashlib.sha256(out).digest() == hashlib.sha256(value).digest()
    small = os.urandom(16).hex().encode()
    pair.a("secrets", "write", "work:big/3", stdin=_big(9, 12_000_000))
    pair.a("secrets", "write", "work:small", stdin=small)
    assert "updated" in pair.b("vaults", "pull", "mine")
    assert bob_cat(pair, "mine:small") == small
    assert pair.b("vaults", "log", "mine") == pair.a("vaults", "log", "work")
    assert "whole" in pair.b("node", "check")


def bob_cat(two: Pair, address: str) -> bytes:
    from tests.support import run_pk

    r = run_pk("secrets", "cat", address, env=two.bob)
    assert r.returncode == 0, r.stderr.decode()
    return bytes(r.stdout)


class _Pages:
    """A peer that answers fetches with the pages given, in order."""

    def __init__(self, pages: list[dict[str, Any]]) -> None:
        self.pages = pages
        self.asked: list[dict[str, Any]] = []

    async def call(self, method: str, params: dict[str, Any]) -> dict[str, Any]:
        self.asked.append(params)
        return self.pages[len(self.asked) - 1]


HEAD = "a" * 40
VAULT = {"id": "v" + "0" * 26, "name": "work"}


def _page(**extra: Any) -> dict[str, Any]:
    return {"vault": VAULT, "head": HEAD, "writers": [], "objects": [], **extra}


def _fetch(pages: list[dict[str, Any]]) -> dict[str, Any]:
    return asyncio.run(sync_client.fetch(_Pages(pages), "work", []))  # type: ignore[arg-type]


def test_pages_and_parts_are_gathered_in_order() -> None:
    raw = b"\x03" + b"x" * 10
    reply = _fetch(
        [
            _page(objects=[b"\x03a"], next=[1, 0]),
            _page(part=raw[:4], part_of=len(raw), next=[1, 4]),
            _page(part=raw[4:], part_of=len(raw), next=[2, 0]),
            _page(objects=[b"\x03b"]),
        ]
    )
    assert reply["objects"] == [b"\x03a", raw, b"\x03b"]


@pytest.mark.parametrize(
    ("pages", "why"),
    [
        ([_page(objects=[b"\x03a"], next=[0, 0])], "do not move forward"),
        ([_page(objects=[b"\x03a"], next=[1, 0]), _page(next=[2, 0])], "empty page"),
        (
            [_page(objects=[b"\x03a"], next=[1, 0]), {**_page(), "head": "b" * 40}],
            "another vault or head",
        ),
        ([_page(part=b"\x03abc", part_of=2)], "too large"),
        ([_page(part=b"\x03a", part_of=3)], "cut short"),
        ([_page(part=b"\x03a", part_of=(1 << 28) + 1)], "too large"),
        ([_page(part="text", part_of=3)], "malformed part"),
        ([_page(objects="no")], "malformed objects"),
        ([_page(objects=[b"\x03a"], next=[1])], "do not move forward"),
    ],
)
def test_a_hostile_page_sequence_is_refused(pages: list[dict[str, Any]], why: str) -> None:
    with pytest.raises(UpdateRefused, match=why):
        _fetch(pages)


def test_a_page_is_bounded() -> None:
    assert PAGE_BYTES <= 16 * 1024 * 1024  # base64 of a page stays far under a 64 MiB frame


def test_a_fetch_larger_than_the_cap_is_refused(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(sync_client, "MAX_FETCH_BYTES", 10)  # the cap, met by a small fetch
    pages = [_page(objects=[b"\x03" + b"x" * 6], next=[1, 0]), _page(objects=[b"\x03" + b"y" * 6])]
    with pytest.raises(UpdateRefused, match="more than a fetch may hold"):
        _fetch(pages)


def test_the_server_refuses_hostile_page_requests(tmp_path: Any) -> None:
    from polykey.errors import InvalidInput
    from polykey.ids import NodeId
    from polykey.node import FAST_INSECURE_KDF, Node
    from polykey.sync.server import PeerService

    node, _ = Node.bootstrap(tmp_path / "n.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        vault = node.vaults.create("work")
        vault.write("k", b"v")
        blob = vault.lookup(("k",))
        assert blob is not None
        peer = NodeId(bytes(32))
        node.acl.grant(vault.id, peer, ["pull"])
        service = PeerService(node.vaults, node.acl, node.node_id, node.notifications)

        def ask(**extra: Any) -> dict[str, Any]:
            return service.handle(peer, "vaults.fetch", {"vault": "work", **extra})

        assert ask(at=[0, 0])["objects"]
        for bad in ({"at": [-1, 0]}, {"at": [0, -5]}, {"at": [0, 0], "head": blob[1].decode()}):
            with pytest.raises(InvalidInput):
                ask(**bad)  # a negative cursor, or a head that is no commit of the vault
        with pytest.raises(InvalidInput):
            ask(at=[0, 0], head="0" * 40)
        assert ask(at=[10**9, 0]) == {**ask(at=[10**9, 0]), "objects": []}  # past the end


def test_the_next_page_is_made_ahead_for_the_same_peer_only(
    tmp_path: Any, monkeypatch: pytest.MonkeyPatch
) -> None:
    from polykey.ids import NodeId
    from polykey.node import FAST_INSECURE_KDF, Node
    from polykey.sync import server
    from polykey.sync.service import AheadKey
    from polykey.vaults.errors import VaultNotFound

    monkeypatch.setattr(server, "PAGE_OBJECTS", 2)  # a page of two objects: several pages
    node, _ = Node.bootstrap(tmp_path / "n.pk", b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        vault = node.vaults.create("work")
        for i in range(3):
            vault.write(f"k{i}", f"v{i}".encode())
        peer, other = NodeId(bytes(32)), NodeId(bytes([1]) * 32)
        node.acl.grant(vault.id, peer, ["pull"])
        node.acl.grant(vault.id, other, ["pull"])
        service = server.PeerService(node.vaults, node.acl, node.node_id, node.notifications)
        fresh = server.PeerService(node.vaults, node.acl, node.node_id, node.notifications)
        made: list[AheadKey] = []
        make = service.ahead.make

        def counted(key: AheadKey, job: Any) -> None:
            made.append(key)
            make(key, job)

        monkeypatch.setattr(service.ahead, "make", counted)

        def pages(svc: server.PeerService, who: NodeId) -> list[dict[str, Any]]:
            out = [svc.handle(who, "vaults.fetch", {"vault": "work", "at": [0, 0]})]
            while "next" in out[-1]:
                at, head = out[-1]["next"], out[-1]["head"]
                params = {"vault": "work", "at": at, "head": head}
                out.append(svc.handle(who, "vaults.fetch", params))
            return out

        mine = pages(service, peer)
        assert len(mine) > 2 and len(made) == len(mine) - 1  # each next page made ahead
        assert mine == pages(fresh, peer)  # as a request alone makes it
        # a page made ahead for one peer is not another's: that one's grant is its own
        first = service.handle(peer, "vaults.fetch", {"vault": "work", "at": [0, 0]})
        node.acl.revoke(vault.id, peer)
        params = {"vault": "work", "at": first["next"], "head": first["head"]}
        with pytest.raises(VaultNotFound):
            service.handle(peer, "vaults.fetch", params)
        assert service.handle(other, "vaults.fetch", params) == mine[1]


def test_pages_made_ahead_are_bounded() -> None:
    from polykey.sync.service import AHEAD_PAGES, PagesAhead

    ahead = PagesAhead()
    keys = [(b"p", "v", b"h", frozenset[bytes](), i, 0) for i in range(AHEAD_PAGES + 2)]

    def page_of(i: int) -> Callable[[], dict[str, Any]]:
        return lambda: {"objects": [i]}

    for i, key in enumerate(keys):
        ahead.make(key, page_of(i))
    assert ahead.take(keys[0]) is None  # dropped: the oldest, past AHEAD_PAGES
    assert ahead.take(keys[-1]) == {"objects": [len(keys) - 1]}
    assert ahead.take(keys[-1]) is None  # taken once
