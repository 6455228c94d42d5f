"""`pk identities ...`, `pk gestalts ...`, `pk sigchain ...`: who is who (trust/, people.py)."""

from __future__ import annotations

import os
import sys
import time
from typing import Any

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings, read_input
from polykey.cli.safe_text import shown
from polykey.errors import UsageError
from polykey.trust.providers.gpg import sign


@click.group()
def identities() -> None:
    """Identities (github:alice, dns:example.org): claim yours, discover and trust others'."""


@identities.command()
@node_options
@click.argument("provider")
@click.option("--api-url", help="The provider's API (GitHub Enterprise: https://HOST/api/v3).")
@click.option("--login-url", help="Where the provider's OAuth device flow lives.")
@click.option("--client-id", help="The OAuth app's client id for the device flow.")
@click.option("--nameserver", help="DNS: the server asked for TXT records, HOST[:PORT].")
@click.option("--keyserver", help='openpgp: a VKS or HKP keyserver\'s URL ("": none).')
@click.option("--keyserver-api", type=click.Choice(["vks", "hkp"]), help="openpgp: its API.")
@click.option("--wkd-url", help="openpgp: one base URL for both WKD methods (tests, mirrors).")
@click.option("--keyring", help="openpgp: a GnuPG home whose public keys are used (read only).")
@pass_settings
def provider(
    s: Settings,
    provider: str,
    api_url: str | None,
    login_url: str | None,
    client_id: str | None,
    nameserver: str | None,
    keyserver: str | None,
    keyserver_api: str | None,
    wkd_url: str | None,
    keyring: str | None,
) -> None:
    """Show or set where PROVIDER is reached."""
    given = {"api_url": api_url, "login_url": login_url, "client_id": client_id}
    given |= {"nameserver": nameserver, "keyserver": keyserver, "wkd_url": wkd_url}
    given |= {"keyserver_api": keyserver_api, "keyring": keyring}
    settings = {k: v for k, v in given.items() if v is not None}
    r = s.call("identities.provider", {"provider": provider, "settings": settings})
    lines = [f"{shown(k)}\t{shown(v)}" for k, v in sorted(r["settings"].items())]
    emit(s, "\n".join(lines) or f"{shown(provider)}: the defaults.", r)


@identities.command()
@node_options
@click.argument("provider")
@pass_settings
def authenticate(s: Settings, provider: str) -> None:
    """Sign in to PROVIDER (GitHub's device flow): open the address shown, enter the code.
    The token is kept sealed in the node file."""
    r = s.call("identities.authenticate", {"provider": provider})
    click.echo(
        f"Open {shown(r['verification_uri'])} and enter the code {shown(r['user_code'])} "
        f"(it expires in {int(r['expires_in']) // 60} minutes).",
        err=True,
    )
    done = s.call("identities.authenticated", {"provider": provider})
    emit(s, f"Signed in to {shown(provider)} as {shown(done['login'])}.", done)


@identities.command()
@node_options
@click.argument("identity", metavar="PROVIDER:NAME")
@click.option(
    "--signature",
    "signature_file",
    metavar="FILE",
    help="openpgp, keybase: the signature of the statement, made elsewhere (- for stdin).",
)
@click.option("--statement", is_flag=True, help="openpgp, keybase: print the text to sign.")
@click.option("--email", help="openpgp: the key's email address, where WKD finds the key.")
@pass_settings
def claim(
    s: Settings,
    identity: str,
    signature_file: str | None,
    statement: bool,
    email: str | None,
) -> None:
    """Claim IDENTITY for this node: a signed claim in its sigchain, and a proof where the
    provider keeps it (a gist; for DNS, the TXT record to publish, checked once it is). For
    openpgp:FINGERPRINT and keybase:NAME, the claim carries a signature by that OpenPGP key of
    a statement naming this node: your gpg makes it (through gpg-agent), or sign the text
    `--statement` prints elsewhere and pass `--signature FILE`."""
    if identity.startswith("openpgp:"):  # as gpg prints it: groups of four, any case
        identity = "openpgp:" + "".join(identity[8:].split()).upper()
    params: dict[str, Any] = {"identity": identity}
    signed = identity.partition(":")[0] in ("openpgp", "keybase")
    if not signed and (statement or signature_file is not None or email is not None):
        raise UsageError(
            "--statement, --signature and --email are for openpgp: and keybase: identities"
        )
    if signed:
        params["email"] = email or ""
        wanted = s.call("identities.statement", params)
        if statement:
            click.echo(shown(wanted["instructions"]), err=True)
            click.echo(wanted["text"], nl=False)
            return
        if wanted.get("claimed") and signature_file is None:
            r = {"identity": identity, "verified": True, **wanted["claimed"]}
            emit(s, f"Claimed {shown(identity)}: the proof verifies ({shown(r['ref'])}).", r)
            return
        if signature_file is not None:
            raw = read_input(signature_file, "signature")
            params["signature"] = raw.decode("utf-8", "replace")
        else:
            params["signature"] = sign(wanted["text"], wanted["fingerprint"], env=os.environ)
    r = s.call("identities.claim", params)
    lines = []
    if r.get("instructions"):
        lines.append(shown(r["instructions"]))
    if r["verified"]:
        lines.append(f"Claimed {shown(identity)}: the proof verifies ({shown(r['ref'])}).")
    else:
        lines.append(
            f"Claimed {shown(identity)}; the proof does not verify yet: {shown(r.get('reason'))}. "
            f"Once it is published, run `pk identities claim {identity}` again."
        )
    emit(s, "\n".join(lines), r)


@identities.command()
@node_options
@click.argument("identity", metavar="PROVIDER:NAME")
@pass_settings
def discover(s: Settings, identity: str) -> None:
    """Find IDENTITY's nodes from its published proofs, fetch their sigchains, verify."""
    r = s.call("identities.discover", {"identity": identity})
    emit(s, _gestalt_text(r), r)


@identities.command("list")
@node_options
@pass_settings
def list_(s: Settings) -> None:
    """This node's identities, and the others it knows (trusted or not)."""
    r = s.call("identities.list")
    lines = [
        f"mine\t{shown(i['id'])}\t{'verified' if i['verified'] else 'unverified'}"
        for i in r["mine"]
    ]
    for i in r["known"]:
        lines.append(
            f"{'trusted' if i.get('trusted') else 'known'}\t{shown(i['id'])}\t"
            f"{len(i.get('nodes', []))} node(s)"
        )
    emit(s, "\n".join(lines) or "No identities.", r)


@identities.command()
@node_options
@click.argument("identity", metavar="PROVIDER:NAME")
@pass_settings
def get(s: Settings, identity: str) -> None:
    """One identity: trusted or not, and its gestalt."""
    r = s.call("identities.get", {"identity": identity})
    head = f"{shown(r['id'])}\t{'trusted' if r.get('trusted') else 'not trusted'}"
    emit(s, head + "\n" + _gestalt_text(r["gestalt"]), r)


@identities.command()
@node_options
@click.argument("identity", metavar="PROVIDER:NAME")
@pass_settings
def trust(s: Settings, identity: str) -> None:
    """Trust IDENTITY: vaults shared with it are served to every node of its gestalt."""
    emit(s, f"Trusted {shown(identity)}.", s.call("identities.trust", {"identity": identity}))


@identities.command()
@node_options
@click.argument("identity", metavar="PROVIDER:NAME")
@pass_settings
def untrust(s: Settings, identity: str) -> None:
    """Stop trusting IDENTITY: its gestalt is served nothing shared with it."""
    r = s.call("identities.untrust", {"identity": identity})
    emit(s, f"No longer trusted: {shown(identity)}.", r)


def _gestalt_text(g: dict[str, Any]) -> str:
    lines = [f"identity\t{shown(i)}" for i in g.get("identities", [])]
    links = g.get("links", {})
    for n in g.get("nodes", []):
        why = links.get(n)
        lines.append(f"node\t{shown(n)}" + (f"\t({shown(why)})" if why else ""))
    for n in g.get("forked", []):
        lines.append(
            f"FORKED\t{shown(n)}\t(signed two histories of its sigchain: left out; "
            f"`pk sigchain show {shown(n)}`)"
        )
    for n, reason in sorted(g.get("unreachable", {}).items()):
        lines.append(f"unreached\t{shown(n)}\t{shown(reason)}")
    return "\n".join(lines) or "Nothing verified."


@click.group()
def gestalts() -> None:
    """People as this node sees them: nodes and identities joined by verified links."""


@gestalts.command("list")
@node_options
@pass_settings
def gestalts_list(s: Settings) -> None:
    """This node's own gestalt, then each known identity's."""
    r = s.call("gestalts.list")
    emit(s, "\n\n".join(_gestalt_text(g) for g in r["gestalts"]), r)


@gestalts.command("get")
@node_options
@click.argument("vertex", metavar="NODEID|PROVIDER:NAME")
@pass_settings
def gestalts_get(s: Settings, vertex: str) -> None:
    """The gestalt of a node or an identity."""
    r = s.call("gestalts.get", {"vertex": vertex})
    emit(s, _gestalt_text(r), r)


@click.group()
def sigchain() -> None:
    """Signed claims a node makes about itself: links to its nodes and identities."""


@sigchain.command("show")
@node_options
@click.argument("node_id", metavar="[NODEID]", required=False)
@pass_settings
def sigchain_show(s: Settings, node_id: str | None) -> None:
    """This node's sigchain, or another node's (fetched when it answers, else as held)."""
    r = s.call("sigchain.show", {"node_id": node_id})
    lines = _fork_lines(r)
    for e in r["entries"]:
        when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(e["iat"]))
        mark = " (revoked)" if e["revoked"] else ""
        lines.append(f"{e['seq']}\t{when}\t{shown(e['typ'])}\t{shown(e['sub'])}{mark}")
    if r.get("reason"):
        lines.append(f"(not fetched: {shown(r['reason'])})")
    emit(s, "\n".join(lines) or "The sigchain is empty.", r)


@sigchain.command("verify")
@node_options
@click.argument("node_id", metavar="[NODEID]", required=False)
@pass_settings
def sigchain_verify(s: Settings, node_id: str | None) -> None:
    """Verify a sigchain from its first entry: every signature and link."""
    r = s.call("sigchain.verify", {"node_id": node_id})
    emit(s, f"The sigchain of {shown(r['node_id'])} verifies: {r['length']} entries.", r)


@sigchain.command("forget")
@node_options
@click.argument("node_id", metavar="NODEID")
@click.option("-y", "--yes", is_flag=True, help="Do not ask for confirmation.")
@pass_settings
def sigchain_forget(s: Settings, node_id: str, yes: bool) -> None:
    """Forget the copy held of NODEID's sigchain, and the proof of a fork if it was caught
    signing two histories: its next chain is taken afresh, as from a node never met."""
    if not yes:
        if not sys.stdin.isatty():
            raise UsageError(
                f"refusing to forget the sigchain of {node_id[:60]} without confirmation",
                hint="Add --yes to forget it (a fork's proof is dropped with it).",
            )
        click.confirm(f"Forget the sigchain held of {node_id[:60]}?", abort=True)
    r = s.call("sigchain.forget", {"node_id": node_id})
    what = " and the proof of its fork" if r["forked"] else ""
    emit(
        s,
        f"Forgot the {r['held']} entries held of {shown(r['node_id'])}'s sigchain{what}; "
        "its next chain is taken afresh.",
        r,
    )


def _fork_lines(r: dict[str, Any]) -> list[str]:
    """A fork, loudly: both entries the node signed for one place in its chain."""
    fork = r.get("fork")
    if not fork:
        return []
    node, seq = shown(r["node_id"]), int(fork["seq"])
    when = time.strftime("%Y-%m-%d %H:%M", time.gmtime(fork["at"]))
    warning = (
        f"FORKED: {node} signed two different histories of its sigchain at entry {seq} "
        f"(seen {when} UTC). It is refused wherever a gestalt or identity would admit it."
    )
    click.echo(f"pk: warning: {warning}", err=True)
    lines = [warning]
    for side, label in (("held", "held"), ("served", "then served")):
        e = fork[f"{side}_entry"]
        lines.append(
            f"  {label}:\tentry {e['seq']}\t{shown(e['typ'])}\t{shown(e['sub'])}\t"
            f"{shown(e['digest'])}"
        )
    lines.append(f"  (once it is settled: `pk sigchain forget {node} --yes`)")
    return lines
