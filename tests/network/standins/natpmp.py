"""A NAT-PMP router (RFC 6886), and with ``--pcp`` a PCP one (RFC 6887, the MAP opcode) on
the same port, for the port-mapping tests, in this process or as a process in the router's
network namespace:

    python -m tests.network.standins.natpmp HOST PUBLIC_IP [--wan IFACE] [--mode MODE] [--pcp]

It answers on HOST:5351 (in process: any port) with the external address PUBLIC_IP and grants
TCP mappings; given ``--wan`` it makes each mapping real, a nftables DNAT rule from IFACE's
port to the requester's address and port, removed when the mapping is deleted. As a process it
prints ``ready``, then one JSON line per mapping made or deleted, and stops when its stdin
closes. MODE plays a bad router: ``malformed`` (wrong version, wrong opcode, truncated),
``oversized`` (a good reply with bytes after it), ``wrong-source`` (a good reply from another
port), ``spoofed`` (that, with a lie, then the good reply), ``silent`` (no answer),
``refuse`` (result code 2, not authorised), ``wrong-nonce`` (PCP: the nonce changed).
Without ``--pcp`` a PCP request gets NAT-PMP's "unsupported version" (RFC 6887 section 9).
"""

from __future__ import annotations

import argparse
import ipaddress
import re
import socket
import struct
import subprocess
import threading
import time
from typing import Any

from tests.network.standins import serve_events_until_stdin_closes

TABLE = "pkportmap"


class NatPmpStandIn:
    def __init__(
        self,
        host: str,
        public: str,
        *,
        port: int = 0,
        mode: str = "ok",
        max_lifetime: int = 3600,
        wan: str | None = None,
        pcp: bool = False,
    ) -> None:
        self.public, self.mode, self.max_lifetime, self.wan = public, mode, max_lifetime, wan
        self.pcp = pcp
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # wrong-source replies
        self.other.bind(("127.0.0.2" if host == "127.0.0.1" else host, 0))
        self.started = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.rules: dict[tuple[str, int], tuple[int, str]] = {}  # (client, port) -> (ext, handle)
        self.on_event: Any = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        if wan is not None:
            nat_table()

    def start(self) -> NatPmpStandIn:
        self.thread.start()
        return self

    def close(self) -> None:
        self.sock.close()
        self.other.close()

    def _serve(self) -> None:
        while True:
            try:
                data, addr = self.sock.recvfrom(2048)
            except OSError:
                return
            reply = self.answer(data, addr[0])
            if reply is not None:
                self.send(reply, addr)

    def send(self, reply: bytes, addr: tuple[str, int]) -> None:
        if self.mode == "malformed":
            for bad in (bytes([1]) + reply[1:], reply[:1] + bytes([99]) + reply[2:], reply[:-1]):
                self.sock.sendto(bad, addr)
        elif self.mode == "oversized":
            self.sock.sendto(reply + bytes(48), addr)
        elif self.mode == "wrong-source":
            self.other.sendto(reply, addr)
        elif self.mode == "wrong-nonce" and len(reply) == 60:
            self.sock.sendto(reply[:24] + bytes(12) + reply[36:], addr)
        elif self.mode == "spoofed":  # a lie from another port first, then the truth
            lie = reply[:8] + bytes([203, 0, 113, 66]) if reply[1] == 128 else reply[:10] + b"\0\1"
            self.other.sendto(lie + reply[len(lie) :], addr)
            time.sleep(0.05)
            self.sock.sendto(reply, addr)
        elif self.mode != "silent":
            self.sock.sendto(reply, addr)

    def answer(self, data: bytes, client: str) -> bytes | None:
        epoch = int(time.monotonic() - self.started)
        if len(data) >= 2 and data[0] == 2 and self.pcp:
            return self.answer_pcp(data, client, epoch)
        if len(data) < 2:
            return None
        op = data[1]
        if data[0] != 0:  # RFC 6886 3.5 (and RFC 6887 section 9: how a PCP client learns)
            return struct.pack("!BBHI", 0, (128 + op) & 0xFF, 1, epoch)
        if self.mode == "refuse":
            return struct.pack("!BBHI", 0, 128 + op, 2, epoch)
        if op == 0 and len(data) == 2:
            ip = ipaddress.IPv4Address(self.public).packed
            return struct.pack("!BBHI", 0, 128, 0, epoch) + ip
        if op not in (1, 2) or len(data) != 12:
            return struct.pack("!BBHI", 0, 128 + op, 5, epoch)  # unsupported opcode
        _, _, _, internal, wanted, lifetime = struct.unpack("!BBHHHI", data)
        key = (client, internal)
        if lifetime == 0:
            self._delete(key, "NAT-PMP")
            return struct.pack("!BBHIHHI", 0, 128 + op, 0, epoch, internal, 0, 0)
        external, granted = self._map(client, internal, wanted, lifetime, "NAT-PMP")
        return struct.pack("!BBHIHHI", 0, 128 + op, 0, epoch, internal, external, granted)

    def _map(self, client: str, internal: int, wanted: int, life: int, how: str) -> tuple[int, int]:
        key = (client, internal)
        held = self.rules.get(key)
        external = held[0] if held is not None else (wanted or internal)
        if held is None:
            handle = add_dnat(self.wan, external, client, internal) if self.wan else ""
            self.rules[key] = (external, handle)
        granted = min(life, self.max_lifetime)
        self._event("map", client, internal, external, granted, how)
        return external, granted

    def answer_pcp(self, data: bytes, client: str, epoch: int) -> bytes | None:
        """RFC 6887: MAP for TCP; the client's address must be the one the request came from."""
        if len(data) != 60 or data[1] != 1:
            return struct.pack("!BBBBI", 2, 0x80 | data[1] & 0x7F, 0, 3, 0) + bytes(16)
        lifetime, said = struct.unpack_from("!I16s", data, 4)
        nonce, proto, internal, wanted = struct.unpack_from("!12sB3xHH", data, 24)
        mapped = bytes(10) + b"\xff\xff"

        def reply(result: int, life: int, external: int) -> bytes:
            ip = mapped + ipaddress.IPv4Address(self.public).packed
            head = struct.pack("!BBBBII12x", 2, 0x81, 0, result, life, epoch)
            return head + struct.pack("!12sB3xHH16s", nonce, proto, internal, external, ip)

        if self.mode == "refuse":
            return reply(2, 0, 0)
        if said != mapped + ipaddress.IPv4Address(client).packed:
            return reply(12, 0, 0)  # ADDRESS_MISMATCH
        if lifetime == 0:
            self._delete((client, internal), "PCP")
            return reply(0, 0, 0)
        external, granted = self._map(client, internal, wanted, lifetime, "PCP")
        return reply(0, granted, external)

    def _delete(self, key: tuple[str, int], how: str) -> None:
        held = self.rules.pop(key, None)
        if held is None:
            return
        if self.wan is not None:
            remove_dnat(held[1])
        self._event("delete", key[0], key[1], held[0], 0, how)

    def _event(
        self, event: str, client: str, internal: int, external: int, life: int, how: str
    ) -> None:
        doc = {"event": event, "how": how, "client": client, "internal": internal}
        doc |= {"external": external, "lifetime": life}
        self.events.append(doc)
        if self.on_event is not None:
            self.on_event(doc)


def nat_table() -> None:
    """The router's table of mappings (made once; shared by the NAT-PMP/PCP and UPnP routers)."""
    _nft(f"add table ip {TABLE}")
    _nft(f"add chain ip {TABLE} pre {{ type nat hook prerouting priority -100; }}")


def add_dnat(wan: str, external: int, client: str, internal: int) -> str:
    """A mapping made real: TCP to ``wan``'s port ``external`` goes to client:internal. Its
    rule handle."""
    rule = f'iifname "{wan}" tcp dport {external} dnat to {client}:{internal}'
    shown = _nft(f"add rule ip {TABLE} pre {rule}", echo=True)
    found = re.search(r"# handle (\d+)", shown)
    assert found is not None, shown
    return found.group(1)


def remove_dnat(handle: str) -> None:
    _nft(f"delete rule ip {TABLE} pre handle {handle}")


def _nft(command: str, *, echo: bool = False) -> str:
    argv = ["nft", *(["-e", "-a"] if echo else []), command]
    return subprocess.run(argv, capture_output=True, check=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("public")
    parser.add_argument("--wan")
    parser.add_argument("--mode", default="ok")
    parser.add_argument("--pcp", action="store_true")
    args = parser.parse_args()
    router = NatPmpStandIn(
        args.host, args.public, port=5351, mode=args.mode, wan=args.wan, pcp=args.pcp
    )
    serve_events_until_stdin_closes(router)


if __name__ == "__main__":
    main()
