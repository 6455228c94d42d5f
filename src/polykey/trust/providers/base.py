"""What every identity provider is: where a proof lives, what was found there, the interface,
and the errors (docs/spec/identities.md).

An identity is written ``provider:name`` (``github:alice``, ``dns:example.org``), exactly as the
``sub`` of a sigchain ``link-identity`` claim. A provider publishes a proof text at a place
(:class:`ProofRef`), fetches it again by that place alone (never by a search), and lists the
places a user's proofs live. Providers never read the environment or the terminal: base URLs,
nameservers, limits and tokens are handed in.
"""

from __future__ import annotations

import re
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from typing import Protocol, runtime_checkable

from polykey.errors import InvalidInput, PolykeyError

_PROVIDER = re.compile(r"[a-z0-9]{1,32}")
MAX_IDENTITY = 300


@dataclass(frozen=True)
class ProofRef:
    """Where a proof lives: ``ref`` is a gist id for ``github``, the domain for ``dns``."""

    provider: str
    ref: str


@dataclass(frozen=True)
class Proof:
    """A proof as found: ``owner`` is who controls the place, as the provider reports it (the
    gist owner's login; the domain), ``text`` the proof text found there."""

    ref: ProofRef
    owner: str
    text: str


@dataclass(frozen=True)
class Published:
    """A proof put in place (``instructions`` is None), or the text to put there by hand, with
    ``instructions`` saying where (DNS: nothing is written by Polykey)."""

    ref: ProofRef
    text: str
    instructions: str | None


class Provider(Protocol):
    name: str

    def publish(self, identity: str, make_text: Callable[[ProofRef], str]) -> Published:
        """Reserve a place, ask ``make_text(ref)`` for the final text, and write it there."""
        ...

    def fetch(self, ref: ProofRef) -> Proof:
        """The proof at ``ref`` and who controls that place."""
        ...

    def list(self, identity: str) -> list[ProofRef]:
        """The places the identity's proofs live (discovery)."""
        ...


@runtime_checkable
class SignedProvider(Provider, Protocol):
    """A provider whose proofs travel in the claim: a signature by the identity's key."""

    def verify_signed(self, identity: str, node_id: str, proof: Mapping[str, object]) -> object:
        """Check the claim's ``proof`` object for ``identity`` and ``node_id``; raise a
        ProviderError (ProofInvalid and its kinds) when it does not prove the claim."""
        ...


def parse_identity(identity: str) -> tuple[str, str]:
    """``provider:name`` split in two, refusing what a claim's ``sub`` could not hold."""
    provider, sep, name = identity.partition(":")
    if (
        not sep
        or len(identity) > MAX_IDENTITY
        or not _PROVIDER.fullmatch(provider)
        or not name
        or not name.isprintable()
        or any(c.isspace() for c in name)
    ):
        raise InvalidIdentity(repr(identity[:80]))
    return provider, name


def name_of(identity: str, provider: str) -> str:
    """The name part of an identity of this provider."""
    given, name = parse_identity(identity)
    if given != provider:
        raise InvalidIdentity(f"{identity[:80]!r} is not a {provider} identity")
    return name


def when(retry_at: float) -> str:
    """A moment for a message: UTC time and how far away it is."""
    stamp = time.strftime("%Y-%m-%d %H:%M:%S UTC", time.gmtime(retry_at))
    wait = max(0, round(retry_at - time.time()))
    return f"{stamp} (in {wait // 60} min {wait % 60} s)" if wait >= 60 else f"{stamp} ({wait} s)"


# --- errors ------------------------------------------------------------------------------------


class InvalidIdentity(InvalidInput):
    """Not a valid identity."""

    hint = "An identity is provider:name, e.g. github:alice or dns:example.org."


class UnknownProvider(InvalidInput):
    """No such identity provider."""

    hint = "The providers are github, dns, keybase and openpgp."


class BadProviderConfig(InvalidInput):
    """The identity provider's settings are not valid."""

    hint = "Base URLs are https:// (http:// only to this machine); ports are 1 to 65535."


class ProviderError(PolykeyError):
    """The identity provider failed."""

    exit_code = 80


class ProviderUnreachable(ProviderError):
    """The identity provider could not be reached."""

    exit_code = 81
    hint = "Check the network and the provider's address; try again later."


class ProviderRefused(ProviderError):
    """The identity provider refused the request."""

    exit_code = 82
    hint = "Authenticate again (`pk identities authenticate PROVIDER`) and check the identity."


class AuthorizationExpired(ProviderRefused):
    """The authorization code expired before it was entered."""

    hint = "Run `pk identities authenticate` again and enter the new code sooner."


class RateLimited(ProviderError):
    """The identity provider's rate limit was reached."""

    exit_code = 83
    hint = "Try again at the time named; GitHub allows 60 requests an hour without a token."

    def __init__(self, provider: str, retry_at: float) -> None:
        self.retry_at = retry_at
        super().__init__(f"{provider}: retry after {when(retry_at)}")


class ProviderBadReply(ProviderError):
    """The identity provider's reply is not what its API promises."""

    exit_code = 84
    hint = "The provider (or something between) answered wrongly; nothing from it was trusted."


class ReplyTooBig(ProviderBadReply):
    """The identity provider's reply is too big."""

    exit_code = 85
    hint = "A proof is a few kilobytes; a bigger reply is refused before it is read in full."


class ProofNotFound(ProviderError):
    """No proof there."""

    exit_code = 86
    hint = "The proof may have been deleted, or not yet published (DNS records take time)."


class ProofInvalid(ProviderError):
    """The proof text is not valid."""

    exit_code = 87
    hint = "Publish the proof again with `pk identities claim`; an edited proof is refused."


KINDS: tuple[type[ProviderError], ...] = (
    ProviderUnreachable,
    ProviderRefused,
    RateLimited,
    ProviderBadReply,
    ReplyTooBig,
    ProofNotFound,
    ProofInvalid,
)


class Secret:
    """A text never shown: its repr and str are redacted (tokens, device codes)."""

    __slots__ = ("_value",)

    def __init__(self, value: str) -> None:
        self._value = value

    def reveal(self) -> str:
        return self._value

    def __repr__(self) -> str:
        return f"{type(self).__name__}(<redacted>)"

    __str__ = __repr__

    def __eq__(self, other: object) -> bool:
        return type(other) is type(self) and other._value == self._value

    def __hash__(self) -> int:
        return hash((type(self).__name__, self._value))
