"""An HTTP reply read with its body bounded: what another host sends (a Pkarr relay, a
router's UPnP description) is never buffered past the caller's limit, and a compressed body
is refused rather than inflated. httpx is imported by the callers' own modules."""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import httpx


class BodyRefused(ValueError):
    """The reply was larger than allowed, or compressed; ``str()`` says which."""


async def fetch(
    client: httpx.AsyncClient,
    url: str,
    limit: int,
    content: bytes | None = None,
    headers: dict[str, str] | None = None,
) -> tuple[int, bytes]:
    """(status, body) of one GET (or POST of ``content``), the body read up to ``limit``
    bytes; BodyRefused past it (by its Content-Length, or as it arrives)."""
    method = "GET" if content is None else "POST"
    async with client.stream(method, url, content=content, headers=headers) as reply:
        declared = reply.headers.get("content-length", "")
        if declared.isdigit() and int(declared) > limit:
            raise BodyRefused(f"a reply of {declared} bytes, more than {limit}")
        if reply.headers.get("content-encoding", "identity") != "identity":
            raise BodyRefused("a compressed reply")
        body = bytearray()
        async for chunk in reply.aiter_raw():
            body += chunk
            if len(body) > limit:
                raise BodyRefused(f"a reply of more than {limit} bytes")
        return reply.status_code, bytes(body)
