"""Identity providers: where proofs of identity are published and found again
(docs/spec/identities.md). ``get(name, config)`` gives a provider by name.
"""

from __future__ import annotations

from collections.abc import MutableMapping

from polykey.trust.providers.base import (
    KINDS,
    AuthorizationExpired,
    BadProviderConfig,
    InvalidIdentity,
    Proof,
    ProofInvalid,
    ProofNotFound,
    ProofRef,
    Provider,
    ProviderBadReply,
    ProviderError,
    ProviderRefused,
    ProviderUnreachable,
    Published,
    RateLimited,
    ReplyTooBig,
    UnknownProvider,
    parse_identity,
)
from polykey.trust.providers.dns import Dns, DnsConfig
from polykey.trust.providers.github import AccessToken, CachedPage, GitHub, GitHubConfig
from polykey.trust.providers.http import Limits
from polykey.trust.providers.keybase import Keybase, KeybaseConfig
from polykey.trust.providers.openpgp import OpenPgp, OpenPgpConfig

NAMES = ("github", "dns", "keybase", "openpgp")
SIGNED = ("keybase", "openpgp")  # proven by an OpenPGP signature the claim carries
ProviderConfig = GitHubConfig | DnsConfig | KeybaseConfig | OpenPgpConfig

__all__ = [
    "KINDS",
    "NAMES",
    "SIGNED",
    "AccessToken",
    "AuthorizationExpired",
    "BadProviderConfig",
    "CachedPage",
    "Dns",
    "DnsConfig",
    "GitHub",
    "GitHubConfig",
    "InvalidIdentity",
    "Keybase",
    "KeybaseConfig",
    "Limits",
    "OpenPgp",
    "OpenPgpConfig",
    "Proof",
    "ProofInvalid",
    "ProofNotFound",
    "ProofRef",
    "Provider",
    "ProviderBadReply",
    "ProviderConfig",
    "ProviderError",
    "ProviderRefused",
    "ProviderUnreachable",
    "Published",
    "RateLimited",
    "ReplyTooBig",
    "UnknownProvider",
    "get",
    "parse_identity",
]


def get(
    name: str,
    config: ProviderConfig | None = None,
    *,
    token: AccessToken | None = None,
    cache: MutableMapping[str, CachedPage] | None = None,
) -> Provider:
    """The provider called ``name`` with its settings (defaults when None). ``token`` and
    ``cache`` are GitHub's (see :class:`GitHub`); other providers take none."""
    if name == "github" and isinstance(config, GitHubConfig | None):
        return GitHub(config, token=token, cache=cache)
    if name == "dns" and isinstance(config, DnsConfig | None):
        return Dns(config)
    if name == "keybase" and isinstance(config, KeybaseConfig | None):
        return Keybase(config)
    if name == "openpgp" and isinstance(config, OpenPgpConfig | None):
        return OpenPgp(config)
    if name in NAMES:
        raise BadProviderConfig(f"{type(config).__name__} is not the settings of {name}")
    raise UnknownProvider(repr(name[:40]))
