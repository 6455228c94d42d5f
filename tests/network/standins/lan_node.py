"""A host on a LAN for the mDNS tests, run inside a network namespace:

    python -m tests.network.standins.lan_node announce SEED_HEX IP PORT [AS_PUBLIC_HEX]
    python -m tests.network.standins.lan_node lookup PUBLIC_HEX IP

``announce`` registers the node of that seed (its record names IP:PORT) with polykey's
Announcer, prints ``ready`` and stays until its stdin closes; given AS_PUBLIC_HEX it is an
impostor: its own signed record under another node's name. ``lookup`` prints the addresses
polykey's LAN strategy finds for the key (JSON), or ``null``.
"""

from __future__ import annotations

import asyncio
import json
import sys

from polykey.crypto.signing import SigningKey
from polykey.ids import NodeId
from polykey.network import mdns, pkarr
from polykey.network.graph import Address


def announce(seed: str, ip: str, port: int, as_public: str | None) -> None:
    from zeroconf import ServiceInfo

    key = SigningKey(bytes.fromhex(seed))
    record = pkarr.sign(key, [Address(ip, port)])
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


def lookup(public: str, ip: str) -> None:
    zc = mdns.open_zeroconf(ip)
    try:
        found = asyncio.run(mdns.ByLan(zc).find(NodeId(bytes.fromhex(public))))
    finally:
        zc.close()
    print(json.dumps(None if found is None else [str(a) for a in found.addresses]))


if __name__ == "__main__":
    if sys.argv[1] == "announce":
        announce(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5] if sys.argv[5:] else None)
    else:
        lookup(sys.argv[2], sys.argv[3])
