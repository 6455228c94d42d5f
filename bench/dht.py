"""Resolution through a local Mainline DHT: 20 libtorrent sessions on 127.0.0.1 (no default
router, nothing beyond loopback), one node's record put by us, then looked up by NodeId from
another session, each lookup with an empty cache. Prints the median and 95th percentile."""

from __future__ import annotations

import asyncio
import statistics
import time
from typing import Any

from bench.common import Row
from polykey.crypto.signing import SigningKey
from polykey.ids import NodeId
from polykey.network import pkarr
from polykey.network.dht import ByDht, Dht, DhtConfig, RecordCache, available, session_settings
from polykey.network.graph import Address

SIZE = 20


def section(quick: bool) -> list[Row]:
    if not available():
        return [("DHT resolution (libtorrent not installed)", "-", "")]
    import libtorrent as lt

    settings: Any = session_settings(DhtConfig((Address("127.0.0.1", 1),))) | {"alert_mask": 0}
    sessions = [lt.session(settings) for _ in range(SIZE)]
    ports = [int(s.listen_port()) for s in sessions]
    for i, session in enumerate(sessions):
        for j in {0, 1, 2, (i + 1) % SIZE, (i + 7) % SIZE} - {i}:
            session.add_dht_node(("127.0.0.1", ports[j]))
    time.sleep(1.0)
    bootstrap = tuple(Address("127.0.0.1", p) for p in ports[:3])
    samples = asyncio.run(_lookups(bootstrap, 20 if quick else 100))
    del sessions
    ordered = sorted(samples)
    p95 = ordered[min(len(ordered) - 1, int(len(ordered) * 0.95))]
    return [
        (
            f"DHT resolution, {SIZE} local sessions: median",
            f"{statistics.median(samples):.1f} ms",
            "",
        ),
        (f"DHT resolution, {SIZE} local sessions: p95", f"{p95:.1f} ms", ""),
    ]


async def _lookups(bootstrap: tuple[Address, ...], n: int) -> list[float]:
    key = SigningKey(bytes([42]) * 32)
    publisher = Dht(DhtConfig(bootstrap))
    reader = Dht(DhtConfig(bootstrap, read_only=True))
    await publisher.start()
    await reader.start()
    try:
        await publisher.put(pkarr.sign(key, [Address("127.0.0.1", 1314)]))
        out = []
        for _ in range(n):
            reader.cache = RecordCache()  # each lookup asks the DHT
            started = time.perf_counter()
            found = await ByDht(reader).find(NodeId(key.public))
            out.append((time.perf_counter() - started) * 1000)
            assert found is not None
        return out
    finally:
        await publisher.close()
        await reader.close()
