"""Pkarr relays over HTTP: publish this node's record, and look another node's up.

A relay speaks the API of Pkarr's design/relays.md: ``PUT /<z32>`` with the relay payload
(204 stored; 400 bad key, signature or packet; 409 it holds a newer record; 413 too large; 429
too many requests, with Retry-After) and ``GET /<z32>`` (200 with the payload, 404 none). The
relays are a list the user configures: nothing is sent anywhere else, httpx ignores proxy
settings from the environment, and an empty record is never published (pkarr.sign refuses it).
A relay that answered 429 is left alone until its Retry-After has passed.
"""

from __future__ import annotations

import asyncio
import logging
import math
import time
from collections.abc import Sequence
from dataclasses import dataclass
from typing import TYPE_CHECKING

from polykey.errors import InvalidInput
from polykey.network import pkarr, zbase32

if TYPE_CHECKING:
    import httpx

log = logging.getLogger("polykey.network")

TIMEOUT_S = 5.0
DEFAULT_RETRY_AFTER_S = 60.0  # a 429 without a usable Retry-After
MAX_RETRY_AFTER_S = 3600.0
CONTENT_TYPE = "application/pkarr.org/relays#payload"


@dataclass(frozen=True)
class Outcome:
    """What one relay said to a publish: stored, conflict (it holds a newer record), limited
    (429: try after ``retry_after`` seconds), refused (400, 413, other), unreachable."""

    relay: str
    result: str
    status: int | None = None
    retry_after: float | None = None

    @property
    def stored(self) -> bool:
        return self.result == "stored"


def check_relay_url(url: str) -> str:
    """A relay's base URL, without a trailing slash; InvalidInput unless http(s)://HOST[...]."""
    text = url.strip().rstrip("/")
    scheme, sep, rest = text.partition("://")
    if not sep or scheme not in ("http", "https") or not rest or any(c.isspace() for c in rest):
        raise InvalidInput(
            f"not a relay URL: {url[:80]!r}", hint="For example https://relay.example.org."
        )
    return text


class Relays:
    """The configured relays, asked all at once."""

    def __init__(self, urls: Sequence[str], *, timeout: float = TIMEOUT_S) -> None:
        self.urls = tuple(dict.fromkeys(check_relay_url(u) for u in urls))
        self.timeout = timeout
        self._not_before: dict[str, float] = {}  # relay -> monotonic time its 429 ends

    def __repr__(self) -> str:
        return f"Relays({len(self.urls)})"

    def __bool__(self) -> bool:
        return bool(self.urls)

    def _client(self) -> httpx.AsyncClient:
        import httpx

        return httpx.AsyncClient(timeout=self.timeout, trust_env=False, follow_redirects=False)

    async def publish(self, record: pkarr.SignedRecord) -> list[Outcome]:
        """PUT ``record`` to every relay at once; one Outcome per relay, in list order."""
        async with self._client() as client:
            return list(await asyncio.gather(*(self._put(client, u, record) for u in self.urls)))

    async def _put(
        self, client: httpx.AsyncClient, relay: str, record: pkarr.SignedRecord
    ) -> Outcome:
        import httpx

        wait = self._not_before.get(relay, 0.0) - time.monotonic()
        if wait > 0:
            return Outcome(relay, "limited", 429, round(wait, 1))
        try:
            reply = await client.put(
                f"{relay}/{record.name}",
                content=record.relay_payload(),
                headers={"Content-Type": CONTENT_TYPE},
            )
        except httpx.HTTPError as exc:
            log.info("relay %s: %s", relay, type(exc).__name__)
            return Outcome(relay, "unreachable")
        code = reply.status_code
        if code in (200, 204):
            return Outcome(relay, "stored", code)
        if code == 409:
            return Outcome(relay, "conflict", code)
        if code == 429:
            after = retry_after(reply.headers.get("retry-after"))
            self._not_before[relay] = time.monotonic() + after
            return Outcome(relay, "limited", code, after)
        return Outcome(relay, "refused", code)

    async def resolve(self, public: bytes) -> tuple[str, pkarr.SignedRecord] | None:
        """The first valid record any relay gives for ``public`` (and that relay); the other
        requests are cancelled. None when no relay has one. A record that does not verify,
        or is for another key, is ignored as if the relay had none."""
        if not self.urls:
            return None
        async with self._client() as client:
            tasks = [asyncio.create_task(self._get(client, u, public)) for u in self.urls]
            try:
                for done in asyncio.as_completed(tasks):
                    found = await done
                    if found is not None:
                        return found
            finally:
                for task in tasks:
                    task.cancel()
                await asyncio.gather(*tasks, return_exceptions=True)
        return None

    async def _get(
        self, client: httpx.AsyncClient, relay: str, public: bytes
    ) -> tuple[str, pkarr.SignedRecord] | None:
        import httpx

        from polykey.network.httpbody import BodyRefused, fetch

        url = f"{relay}/{zbase32.encode(public)}"
        try:  # a record is at most MAX_PAYLOAD_BYTES: no more is read, nor for longer
            async with asyncio.timeout(self.timeout):
                status, body = await fetch(client, url, pkarr.MAX_PAYLOAD_BYTES)
        except (httpx.HTTPError, BodyRefused, TimeoutError) as exc:
            log.info("relay %s: %s", relay, type(exc).__name__)
            return None
        if status != 200:
            return None
        try:
            return relay, pkarr.from_relay_payload(public, body)
        except pkarr.BadRecord as exc:
            log.info("relay %s gave a bad record: %s", relay, exc.detail)
            return None


def retry_after(value: str | None) -> float:
    """Seconds a Retry-After header asks for (delta-seconds only; an HTTP date or garbage
    counts as DEFAULT_RETRY_AFTER_S), bounded to MAX_RETRY_AFTER_S."""
    try:
        seconds = float(value) if value is not None else DEFAULT_RETRY_AFTER_S
    except ValueError:
        seconds = DEFAULT_RETRY_AFTER_S
    if not math.isfinite(seconds) or seconds < 0:
        seconds = DEFAULT_RETRY_AFTER_S
    return min(seconds, MAX_RETRY_AFTER_S)
