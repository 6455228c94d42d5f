"""A Web Key Directory stand-in on loopback: both URL forms of the WKD draft
(draft-koch-openpgp-webkey-service), the advanced ``/.well-known/openpgpkey/DOMAIN/hu/HASH``
and the direct ``/.well-known/openpgpkey/hu/HASH``, each with ``?l=LOCAL``; HASH is the
z-base-32 SHA-1 of the lowercased local part, computed here independently of Polykey's code.
Keys are served binary, as WKD requires."""

from __future__ import annotations

import hashlib
from urllib.parse import parse_qs, urlsplit

from tests.trust.standins.keyserver import Canned, KeyHttpServer

_ALPHABET = "ybndrfg8ejkmcpqxot1uwisza345h769"


def hashed(local: str) -> str:
    digest = hashlib.sha1(local.lower().encode()).digest()
    bits = "".join(f"{b:08b}" for b in digest)
    return "".join(_ALPHABET[int(bits[i : i + 5], 2)] for i in range(0, len(bits), 5))


class WkdStandIn(KeyHttpServer):
    def __init__(self) -> None:
        super().__init__()
        self.keys: dict[str, bytes] = {}  # email -> binary key
        self.canned: dict[str, Canned] = {}  # email -> the reply, as it is
        self.advanced = True  # False: the advanced method finds nothing (direct only)

    def answer(self, path: str) -> Canned:
        parts = urlsplit(path)
        segments = parts.path.split("/")
        local = parse_qs(parts.query).get("l", [""])[0]
        if segments[1:3] != [".well-known", "openpgpkey"]:
            return Canned(404, b"")
        if len(segments) == 6 and segments[4] == "hu":
            if not self.advanced:
                return Canned(404, b"")
            domain, digest = segments[3], segments[5]
        elif len(segments) == 5 and segments[3] == "hu":
            domain, digest = "", segments[4]
        else:
            return Canned(404, b"")
        for email in list(self.canned) + list(self.keys):
            mine, _, their = email.rpartition("@")
            if hashed(mine) == digest and mine == local and domain in ("", their):
                return self.canned.get(email) or Canned(200, self.keys[email])
        return Canned(404, b"")
