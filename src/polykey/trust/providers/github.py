"""GitHub: the OAuth device flow, proofs in public gists found again by gist id, a user's
gists listed with conditional requests; never gist search (docs/spec/identities.md, "GitHub").

The requests are GitHub's REST API v3 as documented (api version 2022-11-28). ``login_url`` and
``api_url`` point at github.com, a GitHub Enterprise server (``https://HOST`` and
``https://HOST/api/v3``) or a test stand-in on loopback; nothing else differs.
"""

from __future__ import annotations

import builtins
import contextlib
import re
import time
from collections.abc import Callable, MutableMapping
from dataclasses import dataclass, field
from urllib.parse import quote

from polykey.errors import PolykeyError
from polykey.trust.providers.base import (
    AuthorizationExpired,
    Proof,
    ProofNotFound,
    ProofRef,
    ProviderBadReply,
    ProviderRefused,
    Published,
    ReplyTooBig,
    Secret,
    name_of,
)
from polykey.trust.providers.http import (
    Http,
    Limits,
    Reply,
    check_base_url,
    expect,
    integer,
    obj,
    origin,
    text,
)

NAME = "github"
# A placeholder: a real OAuth app's client id (with the device flow enabled) must be set in the
# settings; github.com refuses this one.
DEFAULT_CLIENT_ID = "polykey-oauth-app-client-id-not-set"
SCOPE = "gist read:user"
PROOF_FILE = "polykey-proof.md"
PLACEHOLDER = "Polykey proof: being written.\n"
DESCRIPTION = "Polykey proof"
MAX_PROOF = 64 * 1024
GRANT_TYPE = "urn:ietf:params:oauth:grant-type:device_code"
_LOGIN = re.compile(r"[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})")
_GIST_ID = re.compile(r"[0-9A-Za-z]{1,64}")
_TOKEN = re.compile(r"[\x21-\x7e]{1,255}")


@dataclass(frozen=True)
class GitHubConfig:
    login_url: str = "https://github.com"
    api_url: str = "https://api.github.com"
    client_id: str = DEFAULT_CLIENT_ID
    limits: Limits = field(default_factory=Limits)
    max_pages: int = 10  # of 100 gists each, listing one user's


class AccessToken(Secret):
    """An OAuth token: kept sealed by the caller, never shown (its repr is redacted)."""


class DeviceSecret(Secret):
    """The device code of a device flow (the user code is the one shown)."""


@dataclass(frozen=True)
class DeviceCode:
    device_code: DeviceSecret
    user_code: str
    verification_uri: str
    interval: int
    expires_in: int


@dataclass(frozen=True)
class CachedPage:
    """A listing page as last seen, for a conditional request (If-None-Match)."""

    etag: str
    body: bytes
    next_url: str | None = field(default=None)


class GitHub:
    """The GitHub provider. ``token`` is needed to publish (and raises the rate limit from 60
    to 5,000 requests an hour); ``cache`` (url -> :class:`CachedPage`) may be kept by the caller
    between runs."""

    name = NAME

    def __init__(
        self,
        config: GitHubConfig | None = None,
        *,
        token: AccessToken | None = None,
        cache: MutableMapping[str, CachedPage] | None = None,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.config = config = config or GitHubConfig()
        self.login_url = check_base_url(config.login_url, "GitHub login URL")
        self.api_url = check_base_url(config.api_url, "GitHub API URL")
        self.token = token
        self.cache: MutableMapping[str, CachedPage] = {} if cache is None else cache
        self.http = Http("GitHub", config.limits, sleep=sleep, clock=clock)

    def close(self) -> None:
        self.http.close()

    # --- the device flow ------------------------------------------------------------------------

    def start_device_flow(self) -> DeviceCode:
        """Ask for a user code; the user enters it at ``verification_uri``."""
        reply = self._login(
            "/login/device/code", {"client_id": self.config.client_id, "scope": SCOPE}
        )
        body = obj(reply.json(), "the device code reply")
        if "error" in body:
            raise ProviderRefused(f"GitHub: {text(body, 'error', 'the reply', limit=64)}")
        return DeviceCode(
            DeviceSecret(text(body, "device_code", "the device code reply", limit=255)),
            text(body, "user_code", "the device code reply", limit=64),
            text(body, "verification_uri", "the device code reply"),
            integer(body, "interval", "the device code reply"),
            integer(body, "expires_in", "the device code reply"),
        )

    def poll_device_flow(
        self,
        code: DeviceCode,
        *,
        sleep: Callable[[float], None] = time.sleep,
        clock: Callable[[], float] = time.monotonic,
    ) -> AccessToken:
        """Wait for the user to authorize: poll every ``interval`` seconds (5 more after each
        ``slow_down``) until a token, a refusal or the code's expiry."""
        interval = code.interval
        expires = clock() + code.expires_in
        form = {
            "client_id": self.config.client_id,
            "device_code": code.device_code.reveal(),
            "grant_type": GRANT_TYPE,
        }
        while True:
            if clock() >= expires:
                raise AuthorizationExpired(f"after {code.expires_in} s")
            sleep(interval)
            body = obj(self._login("/login/oauth/access_token", form).json(), "the token reply")
            if "access_token" in body:
                token = text(body, "access_token", "the token reply", limit=255)
                if not _TOKEN.fullmatch(token):
                    raise ProviderBadReply("GitHub: the access token is not printable ASCII")
                return AccessToken(token)
            error = text(body, "error", "the token reply", limit=64)
            if error == "authorization_pending":
                continue
            if error == "slow_down":
                given = body.get("interval")
                bumped = interval + 5
                interval = given if isinstance(given, int) and given >= bumped else bumped
                continue
            if error == "expired_token":
                raise AuthorizationExpired(f"after {code.expires_in} s")
            if error == "access_denied":
                raise ProviderRefused("GitHub: the authorization was denied")
            raise ProviderRefused(f"GitHub: {error}")

    def _login(self, path: str, form: dict[str, str]) -> Reply:
        reply = self.http.request(
            "POST", self.login_url + path, headers={"Accept": "application/json"}, form=form
        )
        # GitHub answers the flow's errors with 200; RFC 8628 servers with 400
        return expect(reply, "GitHub", path, 200, 400)

    # --- the API --------------------------------------------------------------------------------

    def whoami(self) -> str:
        """The login of the token's user."""
        if self.token is None:
            raise ProviderRefused(
                "GitHub: no token", hint="Run `pk identities authenticate github` first."
            )
        body = obj(expect(self._api("GET", "/user"), "GitHub", "user", 200).json(), "the user")
        return _login_of(body, "the user")

    def publish(self, identity: str, make_text: Callable[[ProofRef], str]) -> Published:
        """A public gist holding the proof: made with a placeholder, so its id can be named in
        the claim, then given the final text."""
        name = name_of(identity, NAME)
        login = self.whoami()
        if login.lower() != name.lower():
            raise ProviderRefused(f"GitHub: the token is {login}'s, not {name}'s")
        files = {PROOF_FILE: {"content": PLACEHOLDER}}
        made = self._api(
            "POST", "/gists", {"description": DESCRIPTION, "public": True, "files": files}
        )
        gist = obj(expect(made, "GitHub", "gist made", 201).json(), "the gist")
        gist_id = _gist_id(gist)
        ref = ProofRef(NAME, gist_id)
        try:
            final = make_text(ref)
            edit = {"files": {PROOF_FILE: {"content": final}}}
            patched = self._api("PATCH", f"/gists/{gist_id}", edit)
            _proof_of(obj(expect(patched, "GitHub", "gist", 200).json(), "the gist"), ref, final)
        except BaseException:
            self._delete_quietly(gist_id)
            raise
        return Published(ref, final, None)

    def fetch(self, ref: ProofRef) -> Proof:
        """The gist by its id alone: its owner's login and its proof file's content."""
        if ref.provider != NAME or not _GIST_ID.fullmatch(ref.ref):
            raise ProofNotFound(f"{ref.provider}:{ref.ref[:80]!r} is not a gist id")
        reply = expect(self._api("GET", f"/gists/{ref.ref}"), "GitHub", f"gist {ref.ref}", 200)
        return _proof_of(obj(reply.json(), "the gist"), ref, None)

    def list(self, identity: str) -> list[ProofRef]:
        """The user's public gists holding a proof file, newest first; up to ``max_pages``
        pages of 100, each asked conditionally."""
        name = name_of(identity, NAME)
        if not _LOGIN.fullmatch(name):
            raise ProofNotFound(f"{name[:80]!r} is not a GitHub login")
        url: str | None = f"{self.api_url}/users/{quote(name)}/gists?per_page=100"
        refs: builtins.list[ProofRef] = []
        pages = 0
        while url is not None and pages < self.config.max_pages:
            pages += 1
            items, url = self._page(url, f"gists of {name}")
            for n, item in enumerate(items):
                gist = obj(item, f"gist {n}")
                files = obj(gist.get("files"), f"gist {n}.files")
                owner = _login_of(obj(gist.get("owner"), f"gist {n}.owner"), f"gist {n}.owner")
                if PROOF_FILE in files and owner.lower() == name.lower():
                    refs.append(ProofRef(NAME, _gist_id(gist)))
        return refs

    def _page(self, url: str, what: str) -> tuple[builtins.list[object], str | None]:
        cached = self.cache.get(url)
        headers = {"If-None-Match": cached.etag} if cached else {}
        reply = self._api("GET", url, headers=headers)
        if reply.status == 304 and cached is not None:
            body, next_url = cached.body, cached.next_url
        else:
            expect(reply, "GitHub", what, 200)
            body, next_url = reply.body, reply.links.get("next")
            if next_url is not None and origin(next_url) != origin(self.api_url):
                raise ProviderBadReply(f"GitHub: the next page is elsewhere ({next_url[:200]!r})")
            etag = reply.headers.get("etag")
            if etag:
                self.cache[url] = CachedPage(etag, body, next_url)
        items = Reply(200, reply.headers, body, url).json()
        if not isinstance(items, list):
            raise ProviderBadReply(f"GitHub: the {what} are not a list")
        return items, next_url

    def _api(
        self,
        method: str,
        path_or_url: str,
        body: object = None,
        *,
        headers: dict[str, str] | None = None,
    ) -> Reply:
        url = path_or_url if "://" in path_or_url else self.api_url + path_or_url
        sent = {"Accept": "application/vnd.github+json", "X-GitHub-Api-Version": "2022-11-28"}
        if self.token is not None:
            sent["Authorization"] = f"Bearer {self.token.reveal()}"
        sent.update(headers or {})
        return self.http.request(method, url, headers=sent, json_body=body)

    def _delete_quietly(self, gist_id: str) -> None:
        with contextlib.suppress(PolykeyError):  # the first failure is the one reported
            self._api("DELETE", f"/gists/{gist_id}")


def _login_of(owner: dict[str, object], where: str) -> str:
    login = text(owner, "login", where, limit=39)
    if not _LOGIN.fullmatch(login):
        raise ProviderBadReply(f"GitHub: {where}.login is not a GitHub login")
    return login


def _gist_id(gist: dict[str, object]) -> str:
    gist_id = text(gist, "id", "the gist", limit=64)
    if not _GIST_ID.fullmatch(gist_id):
        raise ProviderBadReply("GitHub: the gist id is not a gist id")
    return gist_id


def _proof_of(gist: dict[str, object], ref: ProofRef, expected: str | None) -> Proof:
    """The proof in a gist reply, every field checked: the id asked for, an owner, the proof
    file whole (a truncated file is over GitHub's 1 MB and far over a proof's 64 KiB)."""
    if _gist_id(gist) != ref.ref:
        raise ProviderBadReply(f"GitHub: asked for gist {ref.ref}, got another")
    if gist.get("owner") is None:
        raise ProofNotFound(f"gist {ref.ref} has no owner (an anonymous gist)")
    owner = _login_of(obj(gist.get("owner"), "the gist's owner"), "the gist's owner")
    files = obj(gist.get("files"), "the gist's files")
    if PROOF_FILE not in files:
        raise ProofNotFound(f"gist {ref.ref} has no {PROOF_FILE}")
    entry = obj(files[PROOF_FILE], f"the gist's {PROOF_FILE}")
    if entry.get("truncated") is True:
        raise ReplyTooBig(f"gist {ref.ref}: {PROOF_FILE} is over a megabyte")
    content = entry.get("content")
    if not isinstance(content, str):
        raise ProviderBadReply(f"GitHub: gist {ref.ref}: {PROOF_FILE} has no text content")
    if len(content) > MAX_PROOF:
        raise ReplyTooBig(f"gist {ref.ref}: {PROOF_FILE} is over {MAX_PROOF} characters")
    if expected is not None and content != expected:
        raise ProviderBadReply(f"GitHub: gist {ref.ref} does not hold the text written")
    return Proof(ref, owner, content)
