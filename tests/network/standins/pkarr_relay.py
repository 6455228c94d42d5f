"""A Pkarr relay stand-in on loopback: the HTTP API of pkarr's design/relays.md, with the
checks a real relay makes, written apart from polykey's own code (its own z-base-32, Ed25519
through `cryptography`, DNS through dnspython) so that it checks ours rather than agreeing
with it.

PUT /<z32>: 400 for a bad key, signature or DNS packet; 413 past 1072 bytes; 409 when it holds
a newer record (Pkarr's order: later timestamp, or on a tie the greater DNS packet); 429 with
Retry-After once a client passes ``limit`` PUTs (if set); else 204 and the record is kept.
GET /<z32>: 200 with the payload (Last-Modified; 304 to an If-Modified-Since not older), 404.
"""

from __future__ import annotations

import email.utils
import threading
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler

import dns.exception
import dns.message
from cryptography.exceptions import InvalidSignature
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

from tests.standin_http import LocalHttp

Z32 = "ybndrfg8ejkmcpqxot1uwisza345h769"
MAX_BODY = 64 + 8 + 1000


def z32_key(name: str) -> bytes | None:
    if len(name) != 52 or any(c not in Z32 for c in name):
        return None
    bits = "".join(format(Z32.index(c), "05b") for c in name)
    if set(bits[256:]) - {"0"}:
        return None
    return int(bits[:256], 2).to_bytes(32, "big")


@dataclass
class Stored:
    payload: bytes
    timestamp: int
    dns: bytes
    at: float


@dataclass
class PkarrRelayStandIn:
    limit: int | None = None  # PUTs accepted before 429s
    retry_after: str = "30"
    records: dict[bytes, Stored] = field(default_factory=dict)
    puts: list[tuple[str, int]] = field(default_factory=list)  # (z32, status) in order
    gets: list[tuple[str, int]] = field(default_factory=list)
    host: str = "127.0.0.1"  # another only inside a network namespace a test made

    def __post_init__(self) -> None:
        self.lock = threading.Lock()
        self.http = LocalHttp(self, _Handler, self.host)
        self.server = self.http.server

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> PkarrRelayStandIn:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def put(self, name: str, body: bytes) -> tuple[int, dict[str, str]]:
        key = z32_key(name)
        if key is None:
            return 400, {}
        if len(body) > MAX_BODY:
            return 413, {}
        if len(body) < 72:
            return 400, {}
        sig, ts, packet = body[:64], int.from_bytes(body[64:72], "big"), body[72:]
        signed = b"3:seqi" + str(ts).encode() + b"e1:v" + str(len(packet)).encode() + b":"
        try:
            Ed25519PublicKey.from_public_bytes(key).verify(sig, signed + packet)
            dns.message.from_wire(packet)
        except (InvalidSignature, ValueError, dns.exception.DNSException):
            return 400, {}
        with self.lock:
            held = self.records.get(key)
            if held is not None and (held.timestamp, held.dns) > (ts, packet):
                return 409, {}
            if self.limit is not None and len([p for p in self.puts if p[1] == 204]) >= self.limit:
                return 429, {"Retry-After": self.retry_after}
            self.records[key] = Stored(body, ts, packet, ts / 1e6)
        return 204, {"Pkarr-Dht-Stored-Nodes": "1"}


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"

    def log_message(self, format: str, *args: object) -> None:
        pass

    @property
    def standin(self) -> PkarrRelayStandIn:
        return self.server.standin  # type: ignore[attr-defined,no-any-return]

    def _reply(self, status: int, headers: dict[str, str], body: bytes = b"") -> None:
        self.send_response(status)
        self.send_header("Access-Control-Allow-Origin", "*")
        self.send_header("Access-Control-Allow-Methods", "GET, PUT, OPTIONS")
        for k, v in headers.items():
            self.send_header(k, v)
        self.send_header("Content-Length", str(len(body)))
        self.end_headers()
        self.wfile.write(body)

    def do_PUT(self) -> None:
        length = int(self.headers.get("Content-Length") or 0)
        body = self.rfile.read(min(length, MAX_BODY + 1))
        name = self.path.lstrip("/")
        status, headers = self.standin.put(name, body)
        with self.standin.lock:
            self.standin.puts.append((name, status))
        self._reply(status, headers)

    def do_GET(self) -> None:
        name = self.path.lstrip("/")
        key = z32_key(name)
        held = self.standin.records.get(key) if key is not None else None
        status = 400 if key is None else 404 if held is None else 200
        with self.standin.lock:
            self.standin.gets.append((name, status))
        if held is None:
            self._reply(status, {})
            return
        modified = email.utils.formatdate(held.at, usegmt=True)
        since = self.headers.get("If-Modified-Since")
        if since:
            when = email.utils.parsedate_to_datetime(since).timestamp()
            if when >= int(held.at):
                self._reply(304, {"Last-Modified": modified})
                return
        headers = {
            "Content-Type": "application/pkarr.org/relays#payload",
            "Cache-Control": "public, max-age=30",
            "Last-Modified": modified,
        }
        self._reply(200, headers, held.payload)


if __name__ == "__main__":  # in a namespace: python -m tests.network.standins.pkarr_relay HOST
    import sys

    standin = PkarrRelayStandIn(host=sys.argv[1]).start()
    print(standin.url, flush=True)
    sys.stdin.read()  # until the test closes its end
    standin.stop()
