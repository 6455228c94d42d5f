"""Session tokens: what a CLI process shows the agent instead of the password.

A token is 32 random bytes (base64url, prefix ``pk1.``). The agent keeps only HMAC(key, token)
with the time it was made and last used; a token expires after an idle time and after an
absolute time. ``revoke_all`` draws a new key, so every token ever issued stops working at once.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import os
import time
from dataclasses import dataclass

from polykey.errors import PolykeyError

PREFIX = "pk1."
DEFAULT_IDLE_S = 30 * 60
DEFAULT_ABSOLUTE_S = 12 * 3600


class SessionInvalid(PolykeyError):
    """The agent session is not valid."""

    exit_code = 42
    hint = "Unlock a new session with `pk agent unlock` (the password is asked)."


@dataclass
class Session:
    created: float
    used: float


class Sessions:
    def __init__(
        self, idle_s: float = DEFAULT_IDLE_S, absolute_s: float = DEFAULT_ABSOLUTE_S
    ) -> None:
        self.idle_s = idle_s
        self.absolute_s = absolute_s
        self._key = os.urandom(32)
        self._sessions: dict[bytes, Session] = {}

    def __repr__(self) -> str:
        return f"Sessions({len(self._sessions)} active)"

    def _digest(self, token: str) -> bytes:
        return hmac.new(self._key, token.encode(), hashlib.sha256).digest()

    def issue(self) -> str:
        self._purge()
        token = PREFIX + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
        now = time.monotonic()
        self._sessions[self._digest(token)] = Session(now, now)
        return token

    def check(self, token: object) -> None:
        if (
            not isinstance(token, str)
            or not token.isascii()
            or not token.startswith(PREFIX)
            or len(token) > 100
        ):
            raise SessionInvalid("no token, or not a Polykey session token")
        digest = self._digest(token)
        session = self._sessions.get(digest)
        if session is None:
            raise SessionInvalid("the token is unknown or was revoked")
        now = time.monotonic()
        if now - session.used > self.idle_s or now - session.created > self.absolute_s:
            raise SessionInvalid("the session expired")  # kept, so a retry says the same
        session.used = now

    def _purge(self) -> None:
        """Forget sessions that expired long ago (an expired one is kept an hour to be named)."""
        now = time.monotonic()
        for digest, session in list(self._sessions.items()):
            if (
                now - session.used > self.idle_s + 3600
                or now - session.created > self.absolute_s + 3600
            ):
                del self._sessions[digest]

    def revoke(self, token: str) -> bool:
        return self._sessions.pop(self._digest(token), None) is not None

    def revoke_all(self) -> int:
        count = len(self._sessions)
        self._key = os.urandom(32)
        self._sessions.clear()
        return count

    def __len__(self) -> int:
        """Live sessions (an expired one is kept a while only to be named as expired)."""
        now = time.monotonic()
        return sum(
            1
            for x in self._sessions.values()
            if now - x.used <= self.idle_s and now - x.created <= self.absolute_s
        )
