"""HTTP for the providers: one synchronous httpx client with timeouts, a cap on every reply
(read streamed, refused past the cap), a deadline per request, redirects followed only within
the origin, bounded retries of reads on 5xx, and rate-limit answers turned into a short wait
or :class:`RateLimited` (docs/spec/identities.md, "HTTP").
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from urllib.parse import urljoin, urlsplit

import httpx

from polykey.trust.providers.base import (
    BadProviderConfig,
    ProofNotFound,
    ProviderBadReply,
    ProviderRefused,
    ProviderUnreachable,
    RateLimited,
    ReplyTooBig,
)

USER_AGENT = "polykey-python/0.1"
_LOOPBACK = {"127.0.0.1", "::1", "localhost"}
_RETRIED_STATUS = {500, 502, 503, 504}
_REDIRECTS = {301, 302, 303, 307, 308}
MAX_REDIRECTS = 3
DEFAULT_RATE_WAIT = 60.0  # a 429 with no header saying how long


@dataclass(frozen=True)
class Limits:
    """How long and how much: every figure can be lowered by tests and raised by settings."""

    max_reply: int = 1 << 20  # bytes of a reply body, after decompression
    timeout: float = 15.0  # each connect, read, write
    deadline: float = 60.0  # one request, body included
    retries: int = 2  # more tries of a GET answered 5xx or cut off
    backoff: float = 1.0  # the first wait before a retry; doubles
    max_wait: float = 10.0  # a rate-limit wait up to this long is waited once, then retried


@dataclass(frozen=True)
class Reply:
    status: int
    headers: httpx.Headers
    body: bytes
    url: str
    links: dict[str, str] = field(default_factory=dict)  # rel -> URL (the Link header)

    def json(self) -> object:
        try:
            return json.loads(self.body)
        except (ValueError, RecursionError, UnicodeDecodeError):
            raise ProviderBadReply(f"{self.url}: the reply is not JSON") from None


def origin(url: str) -> tuple[str, str, int]:
    parts = urlsplit(url)
    default = 443 if parts.scheme == "https" else 80
    return parts.scheme, (parts.hostname or "").lower(), parts.port or default


def check_base_url(url: str, what: str) -> str:
    """A base URL: https, or http to this machine alone; no query, no credentials."""
    try:
        parts = urlsplit(url)
        parts.port  # noqa: B018  (raises on a bad port)
    except ValueError:
        raise BadProviderConfig(f"{what} {url!r}") from None
    secure = parts.scheme == "https" or (
        parts.scheme == "http" and (parts.hostname or "") in _LOOPBACK
    )
    if not secure or not parts.hostname or parts.query or parts.fragment or "@" in parts.netloc:
        raise BadProviderConfig(f"{what} {url!r}")
    return url.rstrip("/")


class Http:
    """Requests to one provider (``name`` appears in every message)."""

    def __init__(
        self,
        name: str,
        limits: Limits,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.name = name
        self.limits = limits
        self.sleep = sleep
        self.clock = clock
        self.client = httpx.Client(
            timeout=httpx.Timeout(limits.timeout),
            follow_redirects=False,
            trust_env=False,
            headers={"User-Agent": USER_AGENT},
        )

    def close(self) -> None:
        self.client.close()

    def request(
        self,
        method: str,
        url: str,
        *,
        headers: Mapping[str, str] | None = None,
        json_body: object = None,
        form: Mapping[str, str] | None = None,
    ) -> Reply:
        """One request with its retries; any status is returned except rate limits and, for
        reads, 5xx (after the retries)."""
        tries = 0
        waited = False
        while True:
            try:
                reply = self._follow(method, url, headers, json_body, form)
            except ProviderUnreachable:
                if method != "GET" or tries >= self.limits.retries:
                    raise
                self._backoff(tries)
                tries += 1
                continue
            wait = self.rate_limit_wait(reply)
            if wait is not None:
                if waited or wait > self.limits.max_wait:
                    raise RateLimited(self.name, self.clock() + wait)
                self.sleep(wait)
                waited = True
                continue
            if reply.status in _RETRIED_STATUS:
                if method != "GET" or tries >= self.limits.retries:
                    raise ProviderUnreachable(f"{self.name} answered {reply.status}")
                self._backoff(tries)
                tries += 1
                continue
            return reply

    def _backoff(self, tries: int) -> None:
        self.sleep(self.limits.backoff * (2**tries))

    def rate_limit_wait(self, reply: Reply) -> float | None:
        """Seconds to wait when the reply is a rate-limit answer (GitHub's rules: retry-after,
        else x-ratelimit-reset when x-ratelimit-remaining is 0, else a minute for a 429)."""
        if reply.status not in (403, 429):
            return None
        retry_after = reply.headers.get("retry-after")
        if retry_after is not None and retry_after.strip().isdigit():
            return float(int(retry_after.strip()))
        reset = reply.headers.get("x-ratelimit-reset", "").strip()
        if reply.headers.get("x-ratelimit-remaining", "").strip() == "0":
            if reset.isdigit():
                return max(0.0, float(int(reset)) - self.clock())
            return DEFAULT_RATE_WAIT
        return DEFAULT_RATE_WAIT if reply.status == 429 else None

    def _follow(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        json_body: object,
        form: Mapping[str, str] | None,
    ) -> Reply:
        home = origin(url)
        for _ in range(MAX_REDIRECTS + 1):
            reply = self._once(method, url, headers, json_body, form)
            if reply.status not in _REDIRECTS:
                return reply
            target = urljoin(url, reply.headers.get("location", ""))
            if method != "GET" or origin(target) != home:
                raise ProviderBadReply(f"{self.name} redirected to {target[:200]!r}: refused")
            url = target
        raise ProviderBadReply(f"{self.name} redirected more than {MAX_REDIRECTS} times")

    def _once(
        self,
        method: str,
        url: str,
        headers: Mapping[str, str] | None,
        json_body: object,
        form: Mapping[str, str] | None,
    ) -> Reply:
        cap = self.limits.max_reply
        start = time.monotonic()
        try:
            with self.client.stream(
                method, url, headers=headers, json=json_body, data=form
            ) as response:
                length = response.headers.get("content-length", "")
                if length.isdigit() and int(length) > cap:
                    raise ReplyTooBig(f"{self.name}: {int(length)} bytes, over {cap}")
                chunks: list[bytes] = []
                size = 0
                for chunk in response.iter_bytes():
                    size += len(chunk)
                    if size > cap:
                        raise ReplyTooBig(f"{self.name}: over {cap} bytes")
                    if time.monotonic() - start > self.limits.deadline:
                        raise ProviderUnreachable(
                            f"{self.name} took over {self.limits.deadline:g} s to answer"
                        )
                    chunks.append(chunk)
                links = {
                    str(v.get("rel")): str(v.get("url"))
                    for v in response.links.values()
                    if v.get("rel") and v.get("url")
                }
                return Reply(response.status_code, response.headers, b"".join(chunks), url, links)
        except httpx.TimeoutException:
            raise ProviderUnreachable(f"{self.name} did not answer in time") from None
        except (httpx.RemoteProtocolError, httpx.DecodingError):
            raise ProviderBadReply(f"{self.name}: the reply was cut short or malformed") from None
        except httpx.TransportError as e:
            raise ProviderUnreachable(f"{self.name}: {type(e).__name__}") from None


def expect(reply: Reply, name: str, what: str, *ok: int) -> Reply:
    """The reply when its status is one of ``ok``; otherwise the error the status means."""
    if reply.status in ok:
        return reply
    if reply.status == 401:
        raise ProviderRefused(f"{name} refused the credentials ({what})")
    if reply.status == 403:
        raise ProviderRefused(f"{name} forbade it ({what})")
    if reply.status == 404:
        raise ProofNotFound(f"{name} has no {what}")
    raise ProviderBadReply(f"{name} answered {reply.status} ({what})")


# --- reading JSON replies: each value checked for its type, named when wrong -------------------


def obj(value: object, where: str) -> dict[str, object]:
    if not isinstance(value, dict):
        raise ProviderBadReply(f"{where} is not an object")
    return value


def text(d: Mapping[str, object], key: str, where: str, *, limit: int = 1024) -> str:
    value = d.get(key)
    if not isinstance(value, str) or len(value) > limit:
        raise ProviderBadReply(f"{where}.{key} is not text of at most {limit} characters")
    return value


def integer(d: Mapping[str, object], key: str, where: str) -> int:
    value = d.get(key)
    if not isinstance(value, int) or isinstance(value, bool) or not 0 <= value < 2**31:
        raise ProviderBadReply(f"{where}.{key} is not a whole number")
    return value
