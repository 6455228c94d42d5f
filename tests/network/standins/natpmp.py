"""A NAT-PMP router (RFC 6886) for the port-mapping tests, in this process or as a process in
the router's network namespace:

    python -m tests.network.standins.natpmp HOST PUBLIC_IP [--wan IFACE] [--mode MODE]

It answers on HOST:5351 (in process: any port) with the external address PUBLIC_IP and grants
TCP mappings; given ``--wan`` it makes each mapping real, a nftables DNAT rule from IFACE's
port to the requester's address and port, removed when the mapping is deleted. As a process it
prints ``ready``, then one JSON line per mapping made or deleted, and stops when its stdin
closes. MODE plays a bad router: ``malformed`` (wrong version, wrong opcode, truncated),
``oversized`` (a good reply with bytes after it), ``wrong-source`` (a good reply from another
port), ``spoofed`` (that, with a lie, then the good reply), ``silent`` (no answer),
``refuse`` (result code 2, not authorised).
"""

from __future__ import annotations

import argparse
import ipaddress
import json
import re
import socket
import struct
import subprocess
import sys
import threading
import time
from typing import Any

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
    ) -> None:
        self.public, self.mode, self.max_lifetime, self.wan = public, mode, max_lifetime, wan
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((host, port))
        self.port = self.sock.getsockname()[1]
        self.other = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)  # wrong-source replies
        self.other.bind((host, 0))
        self.started = time.monotonic()
        self.events: list[dict[str, Any]] = []
        self.rules: dict[tuple[str, int], tuple[int, str]] = {}  # (client, port) -> (ext, handle)
        self.on_event: Any = None
        self.thread = threading.Thread(target=self._serve, daemon=True)
        if wan is not None:
            chain = "{ type nat hook prerouting priority -100; }"
            _nft(f"add table ip {TABLE}")
            _nft(f"add chain ip {TABLE} pre {chain}")

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
        elif self.mode == "spoofed":  # a lie from another port first, then the truth
            lie = reply[:8] + bytes([203, 0, 113, 66]) if reply[1] == 128 else reply[:10] + b"\0\1"
            self.other.sendto(lie + reply[len(lie) :], addr)
            time.sleep(0.05)
            self.sock.sendto(reply, addr)
        elif self.mode != "silent":
            self.sock.sendto(reply, addr)

    def answer(self, data: bytes, client: str) -> bytes | None:
        if len(data) < 2 or data[0] != 0:
            return None
        epoch = int(time.monotonic() - self.started)
        op = data[1]
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
            self._delete(key)
            return struct.pack("!BBHIHHI", 0, 128 + op, 0, epoch, internal, 0, 0)
        held = self.rules.get(key)
        external = held[0] if held is not None else (wanted or internal)
        if held is None:
            self.rules[key] = (external, self._dnat(external, client, internal))
        granted = min(lifetime, self.max_lifetime)
        self._event("map", client, internal, external, granted)
        return struct.pack("!BBHIHHI", 0, 128 + op, 0, epoch, internal, external, granted)

    def _delete(self, key: tuple[str, int]) -> None:
        held = self.rules.pop(key, None)
        if held is None:
            return
        if self.wan is not None:
            _nft(f"delete rule ip {TABLE} pre handle {held[1]}")
        self._event("delete", key[0], key[1], held[0], 0)

    def _dnat(self, external: int, client: str, internal: int) -> str:
        if self.wan is None:
            return ""
        rule = f'iifname "{self.wan}" tcp dport {external} dnat to {client}:{internal}'
        shown = _nft(f"add rule ip {TABLE} pre {rule}", echo=True)
        found = re.search(r"# handle (\d+)", shown)
        assert found is not None, shown
        return found.group(1)

    def _event(self, event: str, client: str, internal: int, external: int, life: int) -> None:
        doc = {"event": event, "client": client, "internal": internal, "external": external}
        doc["lifetime"] = life
        self.events.append(doc)
        if self.on_event is not None:
            self.on_event(doc)


def _nft(command: str, *, echo: bool = False) -> str:
    argv = ["nft", *(["-e", "-a"] if echo else []), command]
    return subprocess.run(argv, capture_output=True, check=True, text=True).stdout


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("host")
    parser.add_argument("public")
    parser.add_argument("--wan")
    parser.add_argument("--mode", default="ok")
    args = parser.parse_args()
    router = NatPmpStandIn(args.host, args.public, port=5351, mode=args.mode, wan=args.wan)

    def show(doc: dict[str, Any]) -> None:
        print(json.dumps(doc), flush=True)

    router.on_event = show
    router.start()
    print("ready", flush=True)
    sys.stdin.read()
    router.close()


if __name__ == "__main__":
    main()
