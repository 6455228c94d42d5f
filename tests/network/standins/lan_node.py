"""A host on a LAN for the mDNS tests, run inside a network namespace:

    python -m tests.network.standins.lan_node announce SEED_HEX IP PORT [AS_PUBLIC_HEX]
    python -m tests.network.standins.lan_node announce SEED_HEX IP PORT --via RELAY
    python -m tests.network.standins.lan_node lookup PUBLIC_HEX IP [--relays]

``announce`` registers the node of that seed (its record names IP:PORT) with polykey's
Announcer, prints ``ready`` and stays until its stdin closes; given AS_PUBLIC_HEX it is an
impostor: its own signed record under another node's name; given ``--via RELAY`` its record
names that relay (NODEID@HOST:PORT) and no address, as a node behind NAT. ``lookup`` prints
the addresses polykey's LAN strategy finds for the key (JSON), or ``null``; with
``--relays``, ``{"addresses": [...], "relays": [...]}``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from polykey.crypto.signing import SigningKey
from polykey.ids import NodeId
from polykey.network import mdns, pkarr
from polykey.network.graph import Address


def announce(seed: str, ip: str, port: int, as_public: str | None, via: str | None) -> None:
    from zeroconf import ServiceInfo

    key = SigningKey(bytes.fromhex(seed))
    if via is None:
        record = pkarr.sign(key, [Address(ip, port)])
    else:
        record = pkarr.sign(key, [], relays=[via])
    zc = mdns.open_zeroconf(ip)
    try:
        if as_public is None:
            announcer = mdns.Announcer(zc, port)
            asyncio.run(announcer.announce(record))
        else:
            info = ServiceInfo(
                mdns.SERVICE,
                mdns.instance(bytes.fromhex(as_public)),
                port=port,
                properties=mdns.properties(record),
                server="impostor.local.",
                parsed_addresses=[ip],
            )
            zc.register_service(info)
        print("ready", flush=True)
        sys.stdin.read()
    finally:
        zc.close()


def lookup(public: str, ip: str, relays: bool) -> None:
    zc = mdns.open_zeroconf(ip)
    try:
        found = asyncio.run(mdns.ByLan(zc).find(NodeId(bytes.fromhex(public))))
    finally:
        zc.close()
    addresses = None if found is None else [str(a) for a in found.addresses]
    if relays and found is not None:
        print(json.dumps({"addresses": addresses, "relays": [str(r) for r in found.relays]}))
    else:
        print(json.dumps(addresses))


if __name__ == "__main__":
    args = sys.argv[2:]
    if sys.argv[1] == "announce":
        via = args[args.index("--via") + 1] if "--via" in args else None
        as_public = args[3] if args[3:] and args[3] != "--via" else None
        announce(args[0], args[1], int(args[2]), as_public, via)
    else:
        lookup(args[0], args[1], "--relays" in args)
