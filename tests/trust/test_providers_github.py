"""The GitHub provider against a stand-in on loopback speaking GitHub's REST API and device
flow: the product code is what runs against github.com; only the base URLs differ."""

from __future__ import annotations

import json
from collections.abc import Iterator
from http.server import BaseHTTPRequestHandler

import pytest

from polykey.trust import proofs, providers
from polykey.trust.providers import (
    AccessToken,
    AuthorizationExpired,
    BadProviderConfig,
    GitHub,
    GitHubConfig,
    Limits,
    ProofNotFound,
    ProofRef,
    ProviderBadReply,
    ProviderRefused,
    ProviderUnreachable,
    RateLimited,
    ReplyTooBig,
)
from polykey.trust.providers.github import PROOF_FILE
from tests.trust.standins.github import Canned, GitHubStandIn

NODE = "v" + "0" * 52
CLAIM = '{"payload":"eyJ0eXAiOiJsaW5rLWlkZW50aXR5In0","signatures":[]}'
NOW = 1_700_000_000.0


@pytest.fixture
def gh() -> Iterator[GitHubStandIn]:
    standin = GitHubStandIn().start()
    try:
        yield standin
    finally:
        standin.stop()


class Sleeps(list[float]):
    def __call__(self, seconds: float) -> None:
        self.append(seconds)


def make(
    gh: GitHubStandIn, token: str | None = None, sleeps: Sleeps | None = None, **limits: float
) -> GitHub:
    config = GitHubConfig(
        login_url=gh.url,
        api_url=gh.url,
        client_id=gh.client_id,
        limits=Limits(**{"timeout": 5.0, "backoff": 1.0, "max_wait": 10.0, **limits}),  # type: ignore[arg-type]
    )
    return GitHub(
        config,
        token=AccessToken(token) if token else None,
        sleep=sleeps if sleeps is not None else Sleeps(),
        clock=lambda: NOW,
    )


def proof_text(identity: str) -> object:
    return lambda ref: proofs.render(identity, NODE, CLAIM.replace("[]", f'["{ref.ref}"]'))


# --- the device flow ---------------------------------------------------------------------------


def test_device_flow_waits_through_pending_and_slow_down_then_gives_a_token(
    gh: GitHubStandIn,
) -> None:
    gh.grant("alice", ["authorization_pending", "slow_down", "authorization_pending"])
    github = make(gh)
    code = github.start_device_flow()
    assert (code.user_code, code.interval, code.expires_in) == ("WDJB-MJHT", 5, 900)
    assert code.verification_uri == f"{gh.url}/login/device"
    sleeps = Sleeps()
    token = github.poll_device_flow(code, sleep=sleeps, clock=lambda: 0.0)
    assert sleeps == [5, 5, 10, 10]
    assert repr(token) == str(token) == "AccessToken(<redacted>)"
    assert token.reveal() not in repr(code)
    assert make(gh, token.reveal()).whoami() == "alice"


@pytest.mark.parametrize(
    ("answer", "error"),
    [("access_denied", ProviderRefused), ("expired_token", AuthorizationExpired)],
)
def test_device_flow_ends_on_denial_or_expiry(
    gh: GitHubStandIn, answer: str, error: type[Exception]
) -> None:
    gh.grant("alice", ["authorization_pending", answer])
    github = make(gh)
    with pytest.raises(error):
        github.poll_device_flow(github.start_device_flow(), sleep=Sleeps(), clock=lambda: 0.0)


def test_device_flow_gives_up_when_the_code_expires_locally(gh: GitHubStandIn) -> None:
    gh.grant("alice", ["authorization_pending"] * 1000)
    github = make(gh)
    code = github.start_device_flow()
    ticks = iter(range(0, 10_000, 300))
    with pytest.raises(AuthorizationExpired):
        github.poll_device_flow(code, sleep=Sleeps(), clock=lambda: float(next(ticks)))


def test_device_flow_with_an_unknown_client_id_is_refused(gh: GitHubStandIn) -> None:
    gh.grant("alice", [])
    github = GitHub(GitHubConfig(login_url=gh.url, api_url=gh.url, client_id="nope"))
    with pytest.raises(ProviderRefused):
        github.start_device_flow()


# --- publish, fetch, list ----------------------------------------------------------------------


def test_publish_then_fetch_then_list_finds_the_proof_by_its_gist_id(gh: GitHubStandIn) -> None:
    github = make(gh, gh.add_user("alice"))
    gh.add_gist("alice", {"notes.txt": "not a proof"})
    published = github.publish("github:alice", proof_text("github:alice"))  # type: ignore[arg-type]
    assert published.instructions is None
    assert published.ref.ref in published.text  # the claim names its own gist
    proof = make(gh).fetch(published.ref)  # anyone, without a token
    assert (proof.owner, proof.text) == ("alice", published.text)
    assert proofs.extract(proof.text) == [CLAIM.replace("[]", f'["{published.ref.ref}"]')]
    assert make(gh).list("github:alice") == [published.ref]
    assert not any("search" in path for _, path, _ in gh.log)


def test_publish_refuses_a_token_of_another_user_and_makes_no_gist(gh: GitHubStandIn) -> None:
    github = make(gh, gh.add_user("bob"))
    with pytest.raises(ProviderRefused, match="bob's, not alice's"):
        github.publish("github:alice", proof_text("github:alice"))  # type: ignore[arg-type]
    assert gh.gists == {}


def test_publish_without_a_token_is_refused(gh: GitHubStandIn) -> None:
    with pytest.raises(ProviderRefused):
        make(gh).publish("github:alice", proof_text("github:alice"))  # type: ignore[arg-type]


def test_a_failed_publish_deletes_its_placeholder_gist(gh: GitHubStandIn) -> None:
    github = make(gh, gh.add_user("alice"))

    def broken(ref: ProofRef) -> str:
        raise ProviderUnreachable("make_text failed")

    with pytest.raises(ProviderUnreachable):
        github.publish("github:alice", broken)
    assert gh.gists == {}


def test_fetch_of_another_users_gist_gives_that_owner(gh: GitHubStandIn) -> None:
    text = proofs.render("github:alice", NODE, CLAIM)
    gist_id = gh.add_gist("mallory", {PROOF_FILE: text})
    proof = make(gh).fetch(ProofRef("github", gist_id))
    assert proof.owner == "mallory"


def test_fetch_of_a_missing_gist_or_one_without_the_proof_file(gh: GitHubStandIn) -> None:
    with pytest.raises(ProofNotFound):
        make(gh).fetch(ProofRef("github", "0123456789abcdef"))
    other = gh.add_gist("alice", {"readme.md": "hello"})
    with pytest.raises(ProofNotFound, match=PROOF_FILE):
        make(gh).fetch(ProofRef("github", other))
    with pytest.raises(ProofNotFound):
        make(gh).fetch(ProofRef("github", "../user"))


def test_list_follows_pagination_and_asks_again_conditionally(gh: GitHubStandIn) -> None:
    gh.page_size_cap = 50
    ids = [gh.add_gist("alice", {PROOF_FILE: f"proof {n}"}) for n in range(120)]
    gh.add_gist("alice", {"other.md": "x"})
    github = make(gh)
    first = github.list("github:alice")
    assert {r.ref for r in first} == set(ids) and len(first) == 120
    pages = [h for _, path, h in gh.log if path.startswith("/users/alice/gists")]
    assert len(pages) == 3 and not any("if-none-match" in h for h in pages)

    gh.log.clear()
    assert github.list("github:alice") == first
    assert [("if-none-match" in h) for _, _, h in gh.log] == [True, True, True]

    newest = gh.add_gist("alice", {PROOF_FILE: "proof new"})
    again = github.list("github:alice")
    assert again[0] == ProofRef("github", newest) and len(again) == 121


def test_list_of_an_unknown_user_is_not_found(gh: GitHubStandIn) -> None:
    with pytest.raises(ProofNotFound):
        make(gh).list("github:nobody")


def test_list_stops_after_max_pages(gh: GitHubStandIn) -> None:
    gh.page_size_cap = 10
    for n in range(35):
        gh.add_gist("alice", {PROOF_FILE: f"proof {n}"})
    config = GitHubConfig(login_url=gh.url, api_url=gh.url, max_pages=2)
    assert len(GitHub(config).list("github:alice")) == 20


def test_the_token_goes_to_the_api_only_and_never_shows(gh: GitHubStandIn) -> None:
    token = gh.add_user("alice")
    github = make(gh, token)
    github.whoami()
    assert gh.log[-1][2]["authorization"] == f"Bearer {token}"
    assert token not in repr(github.token) and token not in repr(github.__dict__)


def test_base_urls_must_be_https_unless_loopback() -> None:
    with pytest.raises(BadProviderConfig):
        GitHub(GitHubConfig(api_url="http://api.example.com"))
    with pytest.raises(BadProviderConfig):
        GitHub(GitHubConfig(api_url="https://user:pw@api.example.com"))
    GitHub(GitHubConfig(api_url="https://ghe.example.com/api/v3"))


def test_the_registry_gives_providers_by_name(gh: GitHubStandIn) -> None:
    github = providers.get("github", GitHubConfig(login_url=gh.url, api_url=gh.url))
    assert github.name == "github"
    with pytest.raises(providers.UnknownProvider):
        providers.get("myspace")
    with pytest.raises(BadProviderConfig):
        providers.get("dns", GitHubConfig())


# --- hostile replies ---------------------------------------------------------------------------


def raw(status: int, headers: dict[str, str], body: bytes, *, close: bool = True) -> object:
    def answer(h: BaseHTTPRequestHandler) -> None:
        h.send_response(status)
        for k, v in headers.items():
            h.send_header(k, v)
        h.end_headers()
        try:
            h.wfile.write(body)
            h.wfile.flush()
        except OSError:
            pass
        h.close_connection = close

    return answer


def gist_path(gh: GitHubStandIn) -> tuple[ProofRef, str]:
    gist_id = gh.add_gist("alice", {PROOF_FILE: "x"})
    return ProofRef("github", gist_id), f"/gists/{gist_id}"


def test_a_reply_announced_too_big_is_refused_before_reading(gh: GitHubStandIn) -> None:
    ref, path = gist_path(gh)
    gh.hostile[path] = raw(200, {"Content-Length": str(5 << 20)}, b"[" * 4096)  # type: ignore[assignment]
    with pytest.raises(ReplyTooBig):
        make(gh).fetch(ref)


def test_a_reply_growing_past_the_cap_is_cut_off(gh: GitHubStandIn) -> None:
    ref, path = gist_path(gh)
    gh.hostile[path] = raw(200, {"Connection": "close"}, b" " * (300 << 10))  # type: ignore[assignment]
    with pytest.raises(ReplyTooBig):
        make(gh, max_reply=256 << 10).fetch(ref)


def test_a_slow_reply_times_out(gh: GitHubStandIn) -> None:
    ref, path = gist_path(gh)
    gh.hostile[path] = lambda h: gh.stopping.wait(30)  # type: ignore[assignment]
    with pytest.raises(ProviderUnreachable, match="in time"):
        make(gh, timeout=0.2, retries=0).fetch(ref)


def test_a_trickling_reply_passes_its_deadline(gh: GitHubStandIn) -> None:
    ref, path = gist_path(gh)

    def trickle(h: BaseHTTPRequestHandler) -> None:
        h.send_response(200)
        h.send_header("Content-Length", "100000")
        h.end_headers()
        for _ in range(400):
            try:
                h.wfile.write(b" ")
                h.wfile.flush()
            except OSError:
                return
            if gh.stopping.wait(0.05):
                return

    gh.hostile[path] = trickle
    with pytest.raises(ProviderUnreachable, match="took over"):
        make(gh, deadline=0.3, retries=0).fetch(ref)


@pytest.mark.parametrize(
    "body",
    [
        b"{not json",
        b"[" * 100_000,
        b'{"id": 5}',
        b"[]",
        b'{"id": "ID", "owner": {"login": 7}, "files": {}}',
        b'{"id": "ID", "owner": {"login": "alice"}, "files": []}',
        b'{"id": "ID", "owner": {"login": "alice"}, "files": {"polykey-proof.md": {"content": 1}}}',
        b'{"id": "ID", "owner": {"login": "al ice"}, "files": {}}',
        b'{"id": "other", "owner": {"login": "alice"}, "files": {}}',
    ],
)
def test_malformed_or_mistyped_replies_are_refused(gh: GitHubStandIn, body: bytes) -> None:
    ref, path = gist_path(gh)
    body = body.replace(b"ID", ref.ref.encode())
    gh.hostile[path] = raw(200, {"Content-Length": str(len(body))}, body)  # type: ignore[assignment]
    with pytest.raises(ProviderBadReply):
        make(gh).fetch(ref)


def test_a_reply_shorter_than_its_content_length_is_refused(gh: GitHubStandIn) -> None:
    ref, path = gist_path(gh)
    gh.hostile[path] = raw(200, {"Content-Length": "1000"}, b'{"id": "')  # type: ignore[assignment]
    with pytest.raises(ProviderBadReply, match="cut short"):
        make(gh, retries=0).fetch(ref)


def test_a_truncated_proof_file_is_too_big(gh: GitHubStandIn) -> None:
    ref, _ = gist_path(gh)
    gh.gists[ref.ref].files[PROOF_FILE] = "x" * 1_000_100
    with pytest.raises(ReplyTooBig):
        make(gh, max_reply=4 << 20).fetch(ref)


def test_a_redirect_to_another_host_is_refused_and_within_the_origin_followed(
    gh: GitHubStandIn,
) -> None:
    ref, path = gist_path(gh)
    away = {"Location": "https://evil.example/gists/x", "Content-Length": "0"}
    gh.hostile[path] = raw(302, away, b"", close=False)  # type: ignore[assignment]
    with pytest.raises(ProviderBadReply, match="redirected"):
        make(gh).fetch(ref)
    moved = gh.add_gist("alice", {PROOF_FILE: "moved"})
    home = {"Location": f"/gists/{moved}", "Content-Length": "0"}
    gh.hostile[path] = raw(301, home, b"", close=False)  # type: ignore[assignment]
    with pytest.raises(ProviderBadReply, match="asked for gist"):
        make(gh).fetch(ref)  # followed, and the gist that came back is not the one asked for


def test_a_next_page_on_another_host_is_refused(gh: GitHubStandIn) -> None:
    gh.add_user("alice")
    link = '<https://evil.example/users/alice/gists?page=2>; rel="next"'
    gh.queue.append(Canned(200, {"Link": link}, []))
    with pytest.raises(ProviderBadReply, match="next page"):
        make(gh).list("github:alice")


# --- rate limits and server errors -------------------------------------------------------------


def limited(status: int, **headers: str) -> Canned:
    body = {"message": "API rate limit exceeded", "documentation_url": "https://docs.github.com"}
    return Canned(status, {k.replace("_", "-"): v for k, v in headers.items()}, body)


def test_a_short_rate_limit_wait_is_waited_once_then_retried(gh: GitHubStandIn) -> None:
    ref, _ = gist_path(gh)
    gh.queue.append(limited(403, x_ratelimit_remaining="0", x_ratelimit_reset=str(int(NOW) + 7)))
    sleeps = Sleeps()
    assert make(gh, sleeps=sleeps).fetch(ref).owner == "alice"
    assert sleeps == [7.0]
    gh.queue.append(limited(429, retry_after="3"))
    assert make(gh, sleeps=sleeps).fetch(ref).owner == "alice"
    assert sleeps == [7.0, 3.0]


def test_a_long_rate_limit_wait_is_an_error_naming_when_to_retry(gh: GitHubStandIn) -> None:
    ref, _ = gist_path(gh)
    reset = int(NOW) + 3600
    gh.queue.append(limited(403, x_ratelimit_remaining="0", x_ratelimit_reset=str(reset)))
    with pytest.raises(RateLimited) as caught:
        make(gh).fetch(ref)
    assert caught.value.retry_at == reset and caught.value.exit_code == 83
    assert "retry after" in caught.value.message


def test_a_second_rate_limit_after_waiting_is_an_error(gh: GitHubStandIn) -> None:
    ref, _ = gist_path(gh)
    gh.queue += [limited(429, retry_after="1"), limited(429, retry_after="1")]
    with pytest.raises(RateLimited):
        make(gh).fetch(ref)


def test_a_plain_403_is_refused_not_rate_limited(gh: GitHubStandIn) -> None:
    ref, _ = gist_path(gh)
    gh.queue.append(Canned(403, {"X-RateLimit-Remaining": "4000"}, {"message": "Forbidden"}))
    with pytest.raises(ProviderRefused):
        make(gh).fetch(ref)


def test_server_errors_are_retried_with_backoff_for_reads_only(gh: GitHubStandIn) -> None:
    ref, _ = gist_path(gh)
    gh.queue += [Canned(502, {}, {"message": "Bad Gateway"}), Canned(503, {}, None)]
    sleeps = Sleeps()
    assert make(gh, sleeps=sleeps, backoff=0.5).fetch(ref).owner == "alice"
    assert sleeps == [0.5, 1.0]
    gh.queue += [Canned(500, {}, None)] * 3
    with pytest.raises(ProviderUnreachable, match="500"):
        make(gh).fetch(ref)
    github = make(gh, gh.add_user("alice"))
    gh.queue = [Canned(200, {}, {"login": "alice"}), Canned(502, {}, None)]
    with pytest.raises(ProviderUnreachable, match="502"):
        github.publish("github:alice", proof_text("github:alice"))  # type: ignore[arg-type]
    assert [m for m, _, _ in gh.log].count("POST") == 1


def test_unreachable_provider(gh: GitHubStandIn) -> None:
    url = gh.url
    gh.stop()
    github = GitHub(GitHubConfig(login_url=url, api_url=url, limits=Limits(retries=0)))
    with pytest.raises(ProviderUnreachable):
        github.fetch(ProofRef("github", "abc"))


def test_gist_json_shape_matches_githubs_documented_fields(gh: GitHubStandIn) -> None:
    """The stand-in's reply carries the fields GitHub documents (a guard on the stand-in)."""
    ref, _ = gist_path(gh)
    body = json.loads(json.dumps(gh.gist_json(gh.gists[ref.ref], content=True)))
    assert {"id", "files", "owner", "public", "truncated", "html_url"} <= body.keys()
    assert {"filename", "raw_url", "size", "truncated", "content"} <= body["files"][
        PROOF_FILE
    ].keys()


def test_every_provider_error_has_its_own_documented_exit_code_and_hint() -> None:
    from pathlib import Path

    table = (Path(__file__).parents[2] / "docs" / "exit-codes.md").read_text()
    codes = [kind.exit_code for kind in providers.KINDS]
    assert len(set(codes)) == len(codes)
    for kind in providers.KINDS:
        assert f"| {kind.exit_code} | `{kind.__name__}`" in table
        assert kind.hint and (kind.__doc__ or "").strip()
