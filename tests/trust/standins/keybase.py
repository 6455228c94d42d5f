"""A Keybase stand-in on loopback: the lookup API (GET /_/api/1.0/user/lookup.json) in its
documented shape, for the fields Polykey asks for (public_keys, proofs_summary)."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from http.server import BaseHTTPRequestHandler
from typing import Any
from urllib.parse import parse_qs, urlsplit

from tests.standin_http import LocalHttp

# a syntactically plausible armored key (the default); a test gives a real one to sign with
BUNDLE = (
    "-----BEGIN PGP PUBLIC KEY BLOCK-----\n\nmQINBGA=\n=AAAA\n-----END PGP PUBLIC KEY BLOCK-----"
)


@dataclass
class KeybaseUser:
    username: str
    fingerprint: str
    proofs: list[tuple[str, str]] = field(default_factory=list)  # (proof_type, nametag)
    bundle: str = BUNDLE  # the primary key, armored


class KeybaseStandIn:
    def __init__(self) -> None:
        self.users: dict[str, KeybaseUser] = {}
        self.raw: dict[str, object] = {}  # username -> a reply body given as it is
        self.http = LocalHttp(self, _Handler)
        self.server = self.http.server

    @property
    def url(self) -> str:
        return self.http.url

    def start(self) -> KeybaseStandIn:
        self.http.start()
        return self

    def stop(self) -> None:
        self.http.stop()

    def user_json(self, user: KeybaseUser) -> dict[str, Any]:
        kid = "0101" + user.fingerprint[:60]
        return {
            "id": user.fingerprint[:32],
            "basics": {"username": user.username, "username_cased": user.username, "status": 0},
            "public_keys": {
                "primary": {
                    "kid": kid,
                    "key_type": 1,
                    "bundle": user.bundle,
                    "key_fingerprint": user.fingerprint,
                    "key_bits": 4096,
                    "key_algorithm": 1,
                },
                "pgp_public_keys": [user.bundle],
            },
            "proofs_summary": {
                "all": [
                    {
                        "proof_type": kind,
                        "nametag": tag,
                        "state": 1,
                        "service_url": f"https://{kind}.example/{tag}",
                        "proof_url": f"https://{kind}.example/{tag}/proof",
                        "sig_id": "00" * 33,
                        "proof_id": "11" * 11,
                        "human_url": f"https://{kind}.example/{tag}/proof",
                        "presentation_group": kind,
                    }
                    for kind, tag in user.proofs
                ],
                "has_web": any(kind == "generic_web_site" for kind, _ in user.proofs),
            },
        }


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    wbufsize = 1 << 16  # headers and body leave in one write (no delayed-ACK stall)

    def log_message(self, format: str, *args: Any) -> None:
        pass

    def do_GET(self) -> None:
        kb: KeybaseStandIn = self.server.standin  # type: ignore[attr-defined]
        parts = urlsplit(self.path)
        query = {k: v[0] for k, v in parse_qs(parts.query).items()}
        name = query.get("usernames", "")
        body: object
        if parts.path != "/_/api/1.0/user/lookup.json":
            status, body = 404, {"status": {"code": 404, "name": "NOT_FOUND"}}
        elif name in kb.raw:
            status, body = 200, kb.raw[name]
        elif name in kb.users:
            status, body = (
                200,
                {"status": {"code": 0, "name": "OK"}, "them": [kb.user_json(kb.users[name])]},
            )
        else:
            status, body = 200, {"status": {"code": 205, "name": "NOT_FOUND", "desc": "Not found"}}
        raw = json.dumps(body).encode()
        self.send_response(status)
        self.send_header("Content-Type", "application/json; charset=utf-8")
        self.send_header("Content-Length", str(len(raw)))
        self.end_headers()
        self.wfile.write(raw)
