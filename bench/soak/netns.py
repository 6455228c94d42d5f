"""Three hosts on one switch, made of network namespaces (root only), and the faults the soak puts
on their links. The same layout as tests/sync/test_netns.py: a bridge in a fourth namespace, one
veth pair per host. Addresses 10.231.9.1-3/24 exist only inside these namespaces; no traffic
leaves them. `teardown()` removes everything and is safe to call twice (the soak calls it on
Ctrl-C and SIGTERM too, and at exit).
"""

from __future__ import annotations

import atexit
import os
import shutil
import subprocess
import uuid

SUBNET = "10.231.9"


def _ip(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True, check=False, timeout=30)


def unavailable() -> str | None:
    if os.geteuid() != 0:
        return "network namespaces need root"
    if shutil.which("ip") is None:
        return "network namespaces need iproute2 (`ip`)"
    return None


class Switch:
    """Hosts h1..h3 in namespaces pk<n><tag>, joined by bridge br0 in namespace pks<tag>."""

    def __init__(self, hosts: int = 3) -> None:
        self.tag = uuid.uuid4().hex[:6]
        self.switch = f"pks{self.tag}"
        self.hosts = [f"pk{n}{self.tag}" for n in range(1, hosts + 1)]
        self.made: list[str] = []
        self.has_tc = shutil.which("tc") is not None
        self.has_bridge = shutil.which("bridge") is not None
        self._cut: set[int] = set()
        self._holes: set[int] = set()
        self._slow: set[int] = set()

    def address(self, n: int) -> str:
        """The address of host n (1-based)."""
        return f"{SUBNET}.{n}"

    def host_if(self, n: int) -> str:
        return f"h{n}{self.tag}"

    def switch_if(self, n: int) -> str:
        return f"s{n}{self.tag}"

    def setup(self) -> None:
        atexit.register(self.teardown)
        for ns in (self.switch, *self.hosts):
            done = _ip("netns", "add", ns)
            if done.returncode != 0:
                raise OSError(f"ip netns add {ns}: {done.stderr.decode().strip()}")
            self.made.append(ns)
        steps: list[tuple[str, ...]] = [
            ("-n", self.switch, "link", "add", "br0", "type", "bridge"),
            ("-n", self.switch, "link", "set", "br0", "up"),
        ]
        for n, ns in enumerate(self.hosts, 1):
            here, there = self.host_if(n), self.switch_if(n)
            steps += [
                ("link", "add", here, "type", "veth", "peer", "name", there),
                ("link", "set", here, "netns", ns),
                ("link", "set", there, "netns", self.switch),
                ("-n", self.switch, "link", "set", there, "master", "br0"),
                ("-n", self.switch, "link", "set", there, "up"),
                ("-n", ns, "addr", "add", f"{self.address(n)}/24", "dev", here),
                ("-n", ns, "link", "set", here, "up"),
                ("-n", ns, "link", "set", "lo", "up"),
            ]
        for step in steps:
            done = _ip(*step)
            if done.returncode != 0:
                raise OSError(f"ip {' '.join(step)}: {done.stderr.decode().strip()}")
        if self.has_tc:  # tc may be there and the kernel still lack tbf
            self.has_tc = self.slow(1) and self.fast(1)

    # --- faults -----------------------------------------------------------------------------------

    def cut(self, n: int) -> None:
        """Unplug host n at the switch: its link goes down, its packets go nowhere."""
        _ip("-n", self.switch, "link", "set", self.switch_if(n), "down")
        self._cut.add(n)

    def mend(self, n: int) -> None:
        _ip("-n", self.switch, "link", "set", self.switch_if(n), "up")
        self._cut.discard(n)

    def blackhole(self, n: int) -> None:
        """Host n's port on the switch stops forwarding: its link stays up, its packets vanish
        (a silent black hole: peers wait on timeouts, nobody is told)."""
        self._bridge(n, "0")
        self._holes.add(n)

    def unhole(self, n: int) -> None:
        self._bridge(n, "3")
        self._holes.discard(n)

    def _bridge(self, n: int, state: str) -> None:
        bridge = ["ip", "netns", "exec", self.switch, "bridge", "link", "set", "dev"]
        subprocess.run(
            [*bridge, self.switch_if(n), "state", state],
            capture_output=True,
            check=False,
            timeout=30,
        )

    def slow(self, n: int) -> bool:
        """Host n's outgoing traffic squeezed to 16 kbit/s (tc tbf; netem is often missing)."""
        ok = self._tc(
            n, "replace", "root", "tbf", "rate", "16kbit", "burst", "4kb", "latency", "2s"
        )
        if ok:
            self._slow.add(n)
        return ok

    def fast(self, n: int) -> bool:
        self._slow.discard(n)
        return self._tc(n, "del", "root")

    def _tc(self, n: int, *args: str) -> bool:
        tc = ["ip", "netns", "exec", self.hosts[n - 1], "tc", "qdisc", args[0], "dev"]
        done = subprocess.run(
            [*tc, self.host_if(n), *args[1:]],
            capture_output=True,
            check=False,
            timeout=30,
        )
        return done.returncode == 0

    def heal(self) -> None:
        """Every link up and forwarding, no link slowed."""
        for n in list(self._cut):
            self.mend(n)
        for n in list(self._holes):
            self.unhole(n)
        for n in list(self._slow):
            self.fast(n)

    def teardown(self) -> None:
        while self.made:
            _ip("netns", "del", self.made.pop())
