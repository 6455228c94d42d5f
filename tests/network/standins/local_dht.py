"""A local Mainline DHT: libtorrent sessions on 127.0.0.1, bootstrapped to each other, with no
default router, no LSD, UPnP or NAT-PMP (the settings polykey's own sessions use), so nothing
is sent beyond loopback. And a hostile DHT node, written apart from polykey's code, that
answers every ``get`` with the item it is given (a forged or an old record).
"""

from __future__ import annotations

import hashlib
import os
import socket
import threading
import time
from dataclasses import dataclass, field
from typing import Any

import libtorrent as lt

from polykey.network.dht import DhtConfig, session_settings
from polykey.network.graph import Address

LOCAL = DhtConfig((Address("127.0.0.1", 1),))  # "every bootstrap node on loopback"


def check_local(settings: dict[str, Any]) -> None:
    """What keeps a session on loopback: asserted for every session a test starts."""
    assert settings["dht_bootstrap_nodes"] == ""
    assert not (settings["enable_lsd"] or settings["enable_upnp"] or settings["enable_natpmp"])
    assert settings["listen_interfaces"].startswith("127.0.0.1:")
    assert settings["outgoing_interfaces"] == "127.0.0.1"


def bound_on_loopback(port: int) -> bool:
    """Whether this machine's UDP sockets on ``port`` are all bound to 127.0.0.1."""
    seen = []
    with open("/proc/net/udp") as table:
        for line in list(table)[1:]:
            local = line.split()[1]
            ip_hex, port_hex = local.split(":")
            if int(port_hex, 16) == port:
                seen.append(socket.inet_ntoa(bytes.fromhex(ip_hex)[::-1]))
    return bool(seen) and all(ip == "127.0.0.1" for ip in seen)


@dataclass
class LocalDht:
    size: int = 20
    sessions: list[Any] = field(default_factory=list)

    def start(self) -> LocalDht:
        settings: Any = session_settings(LOCAL) | {"alert_mask": 0}
        for _ in range(self.size):
            session = lt.session(settings)
            check_local(dict(session.get_settings()))
            self.sessions.append(session)
        ports = self.ports
        for i, session in enumerate(self.sessions):  # each knows a few others
            for j in {0, 1, 2, (i + 1) % self.size, (i + 7) % self.size} - {i}:
                session.add_dht_node(("127.0.0.1", ports[j]))
        self.settle()
        return self

    def settle(self, least: int = 4, timeout: float = 3.0) -> None:
        """Wait until every session's routing table holds ``least`` nodes (a lookup from any
        of them then reaches the nodes closest to any key)."""
        deadline = time.monotonic() + timeout
        for session in self.sessions:
            session.apply_settings({"alert_mask": int(lt.alert_category.dht)})
        while time.monotonic() < deadline:
            counts = []
            for session in self.sessions:
                session.post_dht_stats()
            for session in self.sessions:
                count = None
                while count is None and time.monotonic() < deadline:
                    session.wait_for_alert(200)
                    for alert in session.pop_alerts():
                        if isinstance(alert, lt.dht_stats_alert):
                            count = sum(b["num_nodes"] for b in alert.routing_table)
                counts.append(count or 0)
            if min(counts) >= least:
                break
            time.sleep(0.1)
        for session in self.sessions:
            session.apply_settings({"alert_mask": 0})

    @property
    def ports(self) -> list[int]:
        return [int(s.listen_port()) for s in self.sessions]

    @property
    def bootstrap(self) -> tuple[Address, ...]:
        return tuple(Address("127.0.0.1", p) for p in self.ports[:3])

    @property
    def env(self) -> str:
        return ",".join(str(a) for a in self.bootstrap)

    def stop(self) -> None:
        self.sessions.clear()  # libtorrent stops a session when it is released


def bencode(value: Any) -> bytes:
    if isinstance(value, int):
        return b"i%de" % value
    if isinstance(value, bytes):
        return b"%d:%s" % (len(value), value)
    if isinstance(value, dict):
        return b"d" + b"".join(bencode(k) + bencode(value[k]) for k in sorted(value)) + b"e"
    raise TypeError(type(value))


@dataclass
class HostileNode:
    """A DHT node on 127.0.0.1 whose id is the target itself (so every lookup asks it first),
    answering ``get`` with ``item`` = (seq, signature, value) for key ``public``."""

    public: bytes
    item: tuple[int, bytes, bytes]
    gets: int = 0
    sock: socket.socket = field(
        default_factory=lambda: socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    )

    def start(self) -> HostileNode:
        self.sock.bind(("127.0.0.1", 0))
        self.sock.settimeout(0.2)
        self.node_id = hashlib.sha1(self.public).digest()
        self.running = True
        threading.Thread(target=self._serve, daemon=True).start()
        return self

    @property
    def address(self) -> Address:
        return Address("127.0.0.1", int(self.sock.getsockname()[1]))

    def _serve(self) -> None:
        while self.running:
            try:
                data, peer = self.sock.recvfrom(2048)
            except (TimeoutError, OSError):
                continue
            try:
                message: Any = lt.bdecode(data)
                tid, query = message[b"t"], message[b"q"]
            except Exception:  # not a query: ignored, as a node would
                continue
            reply: dict[bytes, Any] = {b"id": self.node_id, b"nodes": b""}
            if query == b"get":
                self.gets += 1
                seq, signature, value = self.item
                reply |= {b"token": os.urandom(4), b"k": self.public, b"seq": seq}
                reply |= {b"sig": signature, b"v": value}
            self.sock.sendto(bencode({b"t": tid, b"y": b"r", b"r": reply}), peer)

    def stop(self) -> None:
        self.running = False
        self.sock.close()
