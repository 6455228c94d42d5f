"""Session tokens: issued, checked, revoked one by one or all at once, expired, forged."""

from __future__ import annotations

import base64
import os
import time
from collections.abc import Callable

import pytest

from polykey.agent.sessions import PREFIX, SessionInvalid, Sessions


def refused(sessions: Sessions, token: object) -> str:
    """The detail of the SessionInvalid that checking ``token`` raises."""
    with pytest.raises(SessionInvalid) as info:
        sessions.check(token)
    assert info.value.exit_code == 42
    return info.value.detail


def test_an_issued_token_is_accepted_and_each_token_is_new() -> None:
    sessions = Sessions()
    first, second = sessions.issue(), sessions.issue()
    assert first.startswith(PREFIX) and second.startswith(PREFIX)
    assert first != second
    sessions.check(first)
    sessions.check(second)
    sessions.check(first)  # checking does not use the token up
    assert len(sessions) == 2


def test_the_token_carries_32_random_bytes_in_base64url() -> None:
    token = Sessions().issue()
    body = token.removeprefix(PREFIX)
    assert len(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4))) == 32


def test_revoke_refuses_that_token_only() -> None:
    sessions = Sessions()
    kept, revoked = sessions.issue(), sessions.issue()
    assert sessions.revoke(revoked) is True
    assert "revoked" in refused(sessions, revoked)
    sessions.check(kept)
    assert sessions.revoke(revoked) is False  # already gone
    assert len(sessions) == 1


def test_revoke_all_refuses_every_token_ever_issued_and_counts_them() -> None:
    sessions = Sessions()
    tokens = [sessions.issue() for _ in range(5)]
    assert sessions.revoke_all() == 5
    assert len(sessions) == 0
    for token in tokens:
        assert "unknown or was revoked" in refused(sessions, token)
    fresh = sessions.issue()  # the agent goes on issuing new sessions
    sessions.check(fresh)
    assert sessions.revoke_all() == 1
    assert "unknown or was revoked" in refused(sessions, fresh)


def test_a_session_unused_for_longer_than_the_idle_time_expires() -> None:
    sessions = Sessions(idle_s=0.2, absolute_s=3600)
    token = sessions.issue()
    time.sleep(0.35)
    assert "expired" in refused(sessions, token)
    assert len(sessions) == 0  # no longer a live session
    assert "expired" in refused(sessions, token)  # and a retry is told the same reason


def test_using_a_session_keeps_it_from_going_idle() -> None:
    sessions = Sessions(idle_s=1.5, absolute_s=3600)
    token = sessions.issue()
    time.sleep(0.9)
    sessions.check(token)
    time.sleep(0.9)  # older than the idle time, but used since
    sessions.check(token)


def test_a_session_expires_after_the_absolute_time_even_when_used() -> None:
    sessions = Sessions(idle_s=3600, absolute_s=0.3)
    token = sessions.issue()
    sessions.check(token)
    time.sleep(0.45)
    assert "expired" in refused(sessions, token)


def test_a_random_token_with_the_right_prefix_is_unknown() -> None:
    sessions = Sessions()
    sessions.issue()
    forged = PREFIX + base64.urlsafe_b64encode(os.urandom(32)).decode().rstrip("=")
    assert "unknown" in refused(sessions, forged)


def test_a_token_of_another_agent_is_unknown() -> None:
    mine, other = Sessions(), Sessions()
    assert "unknown" in refused(mine, other.issue())


@pytest.mark.parametrize(
    "forge",
    [
        pytest.param(lambda t: "pk2." + t.removeprefix(PREFIX), id="wrong-prefix"),
        pytest.param(lambda t: t.removeprefix(PREFIX), id="no-prefix"),
        pytest.param(lambda t: t.upper(), id="upper-case-prefix"),
        pytest.param(lambda t: t + "A" * 80, id="too-long"),
        pytest.param(lambda t: PREFIX + "A" * 97, id="101-characters"),
        pytest.param(lambda t: "", id="empty"),
        pytest.param(lambda t: None, id="none"),
        pytest.param(lambda t: t.encode(), id="bytes"),
        pytest.param(lambda t: 12345, id="number"),
        pytest.param(lambda t: [t], id="list"),
    ],
)
def test_a_malformed_token_is_refused_as_not_a_session_token(
    forge: Callable[[str], object],
) -> None:
    sessions = Sessions()
    real = sessions.issue()
    assert "not a Polykey session token" in refused(sessions, forge(real))
    sessions.check(real)  # the real session is unharmed


def test_a_token_changed_in_its_last_character_is_unknown() -> None:
    sessions = Sessions()
    real = sessions.issue()
    changed = real[:-1] + ("A" if real[-1] != "A" else "B")
    assert "unknown" in refused(sessions, changed)
    assert "unknown" in refused(sessions, real + "A")


def test_the_sessions_repr_shows_no_token() -> None:
    sessions = Sessions()
    token = sessions.issue()
    assert token.removeprefix(PREFIX) not in repr(sessions)
    assert "1 active" in repr(sessions)
