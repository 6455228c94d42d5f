"""How an agent is reached (docs/spec/discovery.md sections 9 and 10): what `pk agent status`
shows as ``reachable``.

- ``direct``: it serves peers beyond loopback and no seed sees it at another address;
- ``mapped``: it was given ``--public-address`` (a port its router forwards);
- ``behind NAT``: a seed sees it at an address that is none of this machine's;
- ``via relay``: it is registered with a relay (``--via-relay``, or `pk nodes home-relay`);
- ``loopback``: it serves this machine only.

At start, and every PROBE_S, the agent asks its seeds how they see it (``peer.observed``); an
agent that is a relay (``--relay``) says how many nodes it serves.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable, Sequence
from typing import Any

from polykey.network.graph import Address, parse_address
from polykey.network.relay import Registrar, Relay

log = logging.getLogger("polykey.network")

PROBE_S = 300.0
LOOPBACK = ("127.", "::1", "localhost")
WILDCARD = ("0.0.0.0", "::", "")  # noqa: S104 (names of wildcards, nothing is bound)


class Reachability:
    def __init__(
        self,
        *,
        host: str,
        port: int | None,
        public: Sequence[Address] = (),
        relay: Relay | None = None,
        registrar: Registrar | None = None,
    ) -> None:
        self.host, self.port = host, port
        self.public = tuple(public)
        self.relay = relay
        self.registrar = registrar
        self.seen: list[dict[str, str]] = []  # {"seed": NODEID, "address": HOST:PORT}
        self.own_hosts: set[str] = set()
        self._tasks: list[asyncio.Task[None]] = []

    def __repr__(self) -> str:
        return f"Reachability({self.mode()})"

    def start(self, probe: Callable[[], Any] | None) -> None:
        """Keep the registration (if any) and ask the seeds how they see this node, now and
        every PROBE_S: ``probe`` is a coroutine function returning [{"seed", "address"}]."""
        if self.registrar is not None:
            self._tasks.append(asyncio.create_task(self.registrar.run()))
        if probe is not None:
            self._tasks.append(asyncio.create_task(self._probe(probe)))

    async def _probe(self, probe: Callable[[], Any]) -> None:
        from polykey.network.mdns import lan_addresses

        self.own_hosts = set(await asyncio.to_thread(lan_addresses)) | {self.host}
        while True:
            try:
                self.seen = list(await probe())
            except Exception as exc:  # the next round tries again
                log.info("asking the seeds how they see this node failed: %s", type(exc).__name__)
            await asyncio.sleep(PROBE_S)

    def behind_nat(self) -> bool:
        hosts = set()
        for s in self.seen:
            with contextlib.suppress(Exception):
                hosts.add(parse_address(s["address"]).host)
        return bool(hosts - self.own_hosts)

    def mode(self) -> str:
        if self.registrar is not None and self.registrar.since:
            return "via relay"
        if self.public:
            return "mapped"
        if self.behind_nat():
            return "behind NAT"
        if self.port is None or self.host.startswith(LOOPBACK):
            return "loopback"
        return "direct"

    def status(self) -> dict[str, Any]:
        doc: dict[str, Any] = {"mode": self.mode()}
        if self.registrar is not None:
            doc["via"] = self.registrar.status()
        if self.relay is not None:
            doc["relay"] = self.relay.status()
        if self.seen:
            doc["seen_as"] = self.seen
        return doc

    async def close(self) -> None:
        for task in self._tasks:
            task.cancel()
        if self.registrar is not None:
            self.registrar.close()
        for task in self._tasks:
            with contextlib.suppress(BaseException):
                await task


def registration_target(host: str, port: int) -> Address:
    """Where the relayed connections go: this agent's own peer port (loopback for a
    wildcard host)."""
    return Address("127.0.0.1" if host in WILDCARD else host, port)
