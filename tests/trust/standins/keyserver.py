"""A keyserver stand-in on loopback speaking both keyserver APIs: VKS (keys.openpgp.org's
``GET /vks/v1/by-fingerprint/FPR``, uppercase fingerprints only) and HKP
(``GET /pks/lookup?op=get&options=mr&search=0xFPR``). Keys are served armored, as both do.
``canned`` replies (any status, body, a delay) stand in for servers that lie or stall.

:class:`KeyHttpServer` is the small loopback server the WKD stand-in shares."""

from __future__ import annotations

import time
from dataclasses import dataclass
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.standin_http import LocalHttp


@dataclass(frozen=True)
class Canned:
    status: int
    body: bytes
    delay: float = 0.0  # seconds before the headers are sent


class KeyHttpServer:
    """A threaded HTTP server on 127.0.0.1 whose ``answer(path)`` gives each GET's reply."""

    def __init__(self) -> None:
        self.log: list[str] = []
        self.http = LocalHttp(self, _Handler)
        self.server = self.http.server

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> Any:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def answer(self, path: str) -> Canned:
        raise NotImplementedError


class KeyserverStandIn(KeyHttpServer):
    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, bytes] = {}  # uppercase fingerprint -> armored key
        self.canned: dict[str, Canned] = {}  # uppercase fingerprint -> the reply, as it is

    def answer(self, path: str) -> Canned:
        parts = urlsplit(path)
        if parts.path.startswith("/vks/v1/by-fingerprint/"):
            fingerprint = parts.path.rsplit("/", 1)[1]
            if fingerprint != fingerprint.upper():
                return Canned(400, b"fingerprints are uppercase")
        elif parts.path == "/pks/lookup":
            query = {k: v[0] for k, v in parse_qs(parts.query).items()}
            if query.get("op") != "get" or not query.get("search", "").startswith("0x"):
                return Canned(501, b"not implemented")
            fingerprint = query["search"][2:].upper()
        else:
            return Canned(404, b"not found")
        if fingerprint in self.canned:
            return self.canned[fingerprint]
        if fingerprint in self.keys:
            return Canned(200, self.keys[fingerprint])
        return Canned(404, b"No key found for this fingerprint")


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        standin: KeyHttpServer = self.server.standin  # type: ignore[attr-defined]
        standin.log.append(self.path)
        reply = standin.answer(self.path)
        if reply.delay:
            time.sleep(reply.delay)
        try:
            self.send_response(reply.status)
            self.send_header("Content-Type", "application/pgp-keys")
            self.send_header("Content-Length", str(len(reply.body)))
            self.end_headers()
            self.wfile.write(reply.body)
        except OSError:
            pass  # the client gave up waiting
