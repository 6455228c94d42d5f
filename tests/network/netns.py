"""Network namespaces as hosts, and `pk` run on them (root only): shared by the relay and
hole-punching tests. Nothing here reaches beyond the namespaces a test makes."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import time
import uuid
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest

from tests.support import pk_env, run_pk


def ip(*args: str) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(["ip", *args], capture_output=True, check=False)


def need_namespaces() -> None:
    if os.geteuid() != 0 or shutil.which("ip") is None or shutil.which("nft") is None:
        pytest.skip("needs root, iproute2 and nftables")


def in_ns(ns: str, *argv: str, stdin: bytes | None = None) -> None:
    subprocess.run(["ip", "netns", "exec", ns, *argv], input=stdin, check=True)


def router_rules(wan: str, lan: str, masquerade: str = "masquerade") -> str:
    """A home router's nftables: what leaves by ``wan`` from ``lan`` masqueraded (endpoint-
    independent, keeping the port when it is free; ``masquerade fully-random`` makes it
    symmetric), nothing let in unasked: no forward from ``wan`` but replies, and unasked
    packets to the router itself dropped silently (as home routers do)."""
    return f"""
table ip pknat {{
  chain masq {{
    type nat hook postrouting priority 100; ip saddr {lan} oifname "{wan}" {masquerade};
  }}
  chain guard {{
    type filter hook forward priority 0; ct state established,related accept;
    iifname "{wan}" drop;
  }}
  chain inbound {{
    type filter hook input priority 0; iifname "{wan}" ct state new drop;
  }}
}}
"""


class Internet:
    """Namespaces on one switch (the "internet": a bridge in a namespace of its own) and home
    networks behind NAT routers on it. ``ns[name]`` is a host's namespace."""

    def __init__(self, prefix: str) -> None:
        self.prefix = prefix  # e.g. "10.235": the switch is PREFIX.0.0/24
        self.tag = uuid.uuid4().hex[:6]
        self.ns: dict[str, str] = {}
        self._made: list[str] = []

    def _space(self, name: str) -> str:
        ns = f"pk{name[:3]}{self.tag}"
        if ip("netns", "add", ns).returncode != 0:
            pytest.skip("this machine does not allow network namespaces")
        self._made.append(ns)
        self.ns[name] = ns
        self._run(("-n", ns, "link", "set", "lo", "up"))
        return ns

    def _run(self, step: tuple[str, ...]) -> None:
        done = ip(*step)
        if done.returncode != 0:
            pytest.skip(f"could not set up the namespaces: {done.stderr.decode().strip()}")

    def _wire(self, a: str, a_if: str, b: str, b_if: str) -> None:
        tmp_a, tmp_b = f"a{a_if[:4]}{self.tag}", f"b{b_if[:4]}{self.tag}"
        for step in (
            ("link", "add", tmp_a, "type", "veth", "peer", "name", tmp_b),
            ("link", "set", tmp_a, "netns", self.ns[a]),
            ("link", "set", tmp_b, "netns", self.ns[b]),
            ("-n", self.ns[a], "link", "set", tmp_a, "name", a_if),
            ("-n", self.ns[b], "link", "set", tmp_b, "name", b_if),
            ("-n", self.ns[a], "link", "set", a_if, "up"),
            ("-n", self.ns[b], "link", "set", b_if, "up"),
        ):
            self._run(step)

    def build(self, public: dict[str, int], homes: dict[str, tuple[int, int, str]]) -> None:
        """``public``: host -> its last octet on the switch; ``homes``: host -> (its router's
        last octet on the switch, its home network's third octet, the router's masquerade)."""
        self._space("switch")
        switch = self.ns["switch"]
        self._run(("-n", switch, "link", "add", "sw", "type", "bridge"))
        self._run(("-n", switch, "link", "set", "sw", "up"))
        for name, octet in public.items():
            self._space(name)
            self._wire(name, "eth0", "switch", f"p{octet}")
            self._run(("-n", switch, "link", "set", f"p{octet}", "master", "sw"))
            here = f"{self.prefix}.0.{octet}/24"
            self._run(("-n", self.ns[name], "addr", "add", here, "dev", "eth0"))
        for name, (octet, net, masquerade) in homes.items():
            router = f"r{name}"
            self._space(name)
            self._space(router)
            self._wire(router, "wan", "switch", f"p{octet}")
            self._run(("-n", switch, "link", "set", f"p{octet}", "master", "sw"))
            wan = f"{self.prefix}.0.{octet}/24"
            self._run(("-n", self.ns[router], "addr", "add", wan, "dev", "wan"))
            self._wire(name, "eth0", router, "lan")
            lan = f"{self.prefix}.{net}"
            self._run(("-n", self.ns[router], "addr", "add", f"{lan}.254/24", "dev", "lan"))
            self._run(("-n", self.ns[name], "addr", "add", f"{lan}.1/24", "dev", "eth0"))
            self._run(("-n", self.ns[name], "route", "add", "default", "via", f"{lan}.254"))
            in_ns(self.ns[router], "sysctl", "-qw", "net.ipv4.ip_forward=1")
            rules = router_rules("wan", f"{lan}.0/24", masquerade)
            in_ns(self.ns[router], "nft", "-f", "-", stdin=rules.encode())

    def remasquerade(self, home: str, net: int, masquerade: str) -> None:
        """Change how ``home``'s router masquerades (e.g. to ``masquerade fully-random``)."""
        router = self.ns[f"r{home}"]
        in_ns(router, "nft", "flush", "chain", "ip", "pknat", "masq")
        rule = f'ip saddr {self.prefix}.{net}.0/24 oifname "wan" {masquerade}'
        in_ns(router, "sh", "-c", f"nft add rule ip pknat masq {rule}")

    def close(self) -> None:
        for ns in self._made:
            ip("netns", "del", ns)


@contextmanager
def internet(
    prefix: str, public: dict[str, int], homes: dict[str, tuple[int, int, str]]
) -> Iterator[Internet]:
    need_namespaces()
    net = Internet(prefix)
    try:
        net.build(public, homes)
        yield net
    finally:
        net.close()


class Host:
    """A node on a host (namespace): `pk` run there with its own node file and runtime."""

    def __init__(self, ns: str, tmp: Path, name: str) -> None:
        self.ns = ns
        self.env = pk_env(
            tmp / f"{name}.pk", PK_PASSWORD=name, PK_RUNTIME_DIR=str(tmp / f"run-{name}")
        )
        assert run_pk("bootstrap", env=self.env).returncode == 0
        shown = run_pk("keys", "public", "--format", "json", env=self.env).stdout
        self.id: str = json.loads(shown)["node_id"]

    def argv(self, *args: str) -> list[str]:
        return ["ip", "netns", "exec", self.ns, sys.executable, "-m", "polykey", *args]

    def run(self, *args: str, stdin: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            self.argv(*args), env=self.env, input=stdin, capture_output=True, timeout=120
        )

    def ok(self, *args: str, stdin: bytes | None = None) -> bytes:
        done = self.run(*args, stdin=stdin)
        assert done.returncode == 0, (args, done.stderr.decode())
        return done.stdout

    def status(self) -> dict[str, Any]:
        done = self.run("agent", "status", "--format", "json")
        return json.loads(done.stdout) if done.returncode == 0 else {}

    def wait(self, test: Callable[[dict[str, Any]], bool], timeout: float = 30) -> dict[str, Any]:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if status and test(status):
                return status
            time.sleep(0.3)
        raise AssertionError(f"not reached in {timeout} s: {self.status()}")


def registered(status: dict[str, Any]) -> bool:
    return bool(status.get("reach", {}).get("via", {}).get("registered"))


@contextmanager
def pkarr_relay(ns: str, host: str) -> Iterator[str]:
    """A Pkarr relay stand-in (tests/network/standins/pkarr_relay.py) serving on ``host``
    inside ``ns``: its URL."""
    root = str(Path(__file__).resolve().parents[2])
    module = "tests.network.standins.pkarr_relay"
    proc = subprocess.Popen(
        ["ip", "netns", "exec", ns, sys.executable, "-m", module, host],
        cwd=root,
        env={**os.environ, "PYTHONPATH": root},
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None
        url = proc.stdout.readline().decode().strip()
        assert url.startswith("http://"), url
        yield url
    finally:
        if proc.stdin is not None:
            proc.stdin.close()
        try:
            proc.wait(timeout=5)
        except subprocess.TimeoutExpired:
            proc.kill()
