"""The Node owns the links, the ACL, the node graph, the peers and the notifications; two nodes
in one process share none of them (the discovery simulation will run hundreds of nodes in one)."""

from __future__ import annotations

import re
from pathlib import Path

from polykey.network.graph import Address
from polykey.node import FAST_INSECURE_KDF, Node
from polykey.sync.checks import _memo

SRC = Path(__file__).resolve().parents[1] / "src" / "polykey"


def _node(path: Path) -> Node:
    node, _ = Node.bootstrap(path, b"pw", kdf=FAST_INSECURE_KDF, allow_weak=True)
    return node


def test_two_nodes_in_one_process_share_nothing(tmp_path: Path) -> None:
    a, b = _node(tmp_path / "a.pk"), _node(tmp_path / "b.pk")
    with a, b:
        assert a.peers is not b.peers
        assert a.peers.pool is not b.peers.pool
        a.peers.set_waiter(lambda future: future.result())
        assert b.peers.pool.waiter is not a.peers.pool.waiter
        va, vb = a.vaults.create("v"), b.vaults.create("v")
        assert _memo(va.objects()) is not _memo(vb.objects())
        assert _memo(va.objects()) is _memo(a.vaults.create("w").objects())  # one per node
        a.graph.add(b.node_id, Address("127.0.0.1", 1))
        assert a.graph.knows(b.node_id) and not b.graph.knows(a.node_id)
        assert a.links is not b.links and a.acl.links is a.links and b.acl.links is b.links
        mine, _ = a.links.link(b.node_id)
        assert [e["state"] for e in a.links.states()] == ["pending"] and not b.links.states()
        b.links.accept(mine.to_json(), a.node_id)
        theirs, _ = b.links.link(a.node_id)
        a.links.accept(theirs.to_json(), b.node_id)
        assert a.links.mine() == [b.node_id] and b.links.mine() == [a.node_id]


def test_the_acl_answers_questions(tmp_path: Path) -> None:
    with _node(tmp_path / "a.pk") as a, _node(tmp_path / "b.pk") as b:
        vault = a.vaults.create("team")
        assert not a.acl.knows(b.node_id)
        a.acl.grant(vault.id, b.node_id, ["push"])
        assert a.acl.permits(vault.id, b.node_id, "push")
        assert a.acl.permits(vault.id, b.node_id, "pull")  # push brings pull
        assert not a.acl.permits(vault.id, b.node_id, "clone")
        assert a.acl.knows(b.node_id)
        assert a.acl.writers(vault.id) == [_id(b)]
        assert a.acl.nodes("push") == {_id(b)}
        a.acl.revoke(vault.id, b.node_id)
        assert a.acl.writers(vault.id) == [] and not a.acl.knows(b.node_id)


def _id(node: Node) -> str:
    from polykey.ids import encode_node_id

    return encode_node_id(node.node_id)


def test_only_the_node_constructs_the_links_acl_graph_and_peers() -> None:
    made = re.compile(r"\b(Links|Acl|Graph|Peers|Notifications|Pool)\(")
    found = []
    for path in SRC.rglob("*.py"):
        for number, line in enumerate(path.read_text().splitlines(), 1):
            if made.search(line) and "class " not in line and 'f"' not in line:
                found.append(f"{path.relative_to(SRC)}:{number}")
    # the Node makes the first five; Peers makes its own pool
    rooms = r"\b(Links|Acl|Graph|Peers|Notifications)\("
    assert sorted(found) == sorted(
        ["node.py:" + n for n in _lines("node.py", rooms)]
        + ["network/peers.py:" + n for n in _lines("network/peers.py", r"\bPool\(")]
    )


def _lines(name: str, pattern: str) -> list[str]:
    text = (SRC / name).read_text().splitlines()
    return [str(i) for i, line in enumerate(text, 1) if re.search(pattern, line)]
