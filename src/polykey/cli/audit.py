"""`pk audit log|verify|export|checkpoint` and `pk exposure NODEID|NAME` (docs/spec/audit.md)."""

from __future__ import annotations

import datetime
import re
import sys
from typing import Any

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.cli.safe_text import shown
from polykey.errors import UsageError

_RELATIVE = re.compile(r"(\d+)([smhdw])")
_UNITS = {"s": 1, "m": 60, "h": 3600, "d": 86400, "w": 7 * 86400}


def since_ms(text: str, now: float | None = None) -> int:
    """``--since``: a time ago (30m, 12h, 7d, 2w) or an ISO 8601 date or time (UTC unless it
    names its offset), as unix milliseconds."""
    now = datetime.datetime.now(datetime.UTC).timestamp() if now is None else now
    match = _RELATIVE.fullmatch(text.strip())
    if match is not None:
        return int((now - int(match.group(1)) * _UNITS[match.group(2)]) * 1000)
    try:
        when = datetime.datetime.fromisoformat(text.strip())
    except ValueError:
        raise UsageError(
            f"--since {text[:40]!r} is not a time",
            hint="Give a time ago (30m, 12h, 7d, 2w) or a date (2025-01-31, 2025-01-31T09:00).",
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp() * 1000)


def _when(ms: int) -> str:
    moment = datetime.datetime.fromtimestamp(ms / 1000, datetime.UTC)
    return moment.strftime("%Y-%m-%dT%H:%M:%SZ")


@click.group()
def audit() -> None:
    """What this node did and served: an append-only, hash-chained log in the node file.

    Recorded: every request the agent serves (reads of values, changes, refusals), every
    request of another node (scans, clones and pulls with the commit they received, pushes),
    shares and unshares. Never a value; paths only as a keyed hash.
    """


@audit.command("log")
@node_options
@click.option("--vault", help="Only records of this vault (a name or id).")
@click.option(
    "--by",
    "node_id",
    metavar="NODEID",
    help="Only records of requests by this node (or `local`: this node's own, through the agent)."
    " (--node names the node file, as on every command.)",
)
@click.option("--since", help="Only records since: 30m, 12h, 7d, 2w, or a date (UTC).")
@click.option("--path", "secret", metavar="PATH", help="Only records of this secret path.")
@click.option("--limit", type=click.IntRange(1), default=200, show_default=True)
@pass_settings
def log(
    s: Settings,
    vault: str | None,
    node_id: str | None,
    since: str | None,
    secret: str | None,
    limit: int,
) -> None:
    """The last records (oldest first), filtered."""
    params: dict[str, Any] = {"limit": limit}
    if vault is not None:
        params["vault"] = vault
    if node_id is not None:
        params["node_id"] = node_id
    if since is not None:
        params["since"] = since_ms(since)
    if secret is not None:
        params["path"] = secret
    r = s.call("audit.log", params)
    emit(s, "\n".join(_line(x) for x in r["records"]) or "No records.", r)


def _line(r: dict[str, Any]) -> str:
    parts = [_when(r["at"]), f"#{r['seq']}", shown(r["who"]), shown(r["action"])]
    if r["vault"]:
        parts.append(shown(r["vault"]))
    if r["path"]:
        parts.append(f"path={r['path'][:12]}")
    if r["subject"]:
        parts.append(f"to={shown(r['subject'])}")
    if r["commit"]:
        parts.append(f"commit={shown(r['commit'][:12])}")
    parts.append(shown(r["outcome"]) + (f" ({shown(r['error'])})" if r["error"] else ""))
    return "  ".join(parts)


@audit.command()
@node_options
@pass_settings
def verify(s: Settings) -> None:
    """Check every record: present, unaltered, in order, and matching the checkpoints signed
    into the sigchain. Names each record that is not; exits 89 then."""
    from polykey.vaults.audit import AuditBroken

    r = s.call("audit.verify")
    problems = r["problems"]
    if problems:
        emit(s, "\n".join(shown(p["problem"]) for p in problems), r)
        raise AuditBroken(f"{len(problems)} problem{'s' * (len(problems) != 1)} found")
    cps = r["checkpoints"]
    human = (
        f"The audit log verifies: {r['count']} records, "
        f"{cps} signed checkpoint{'s' * (cps != 1)} checked."
    )
    emit(s, human, r)


@audit.command()
@node_options
@pass_settings
def export(s: Settings) -> None:
    """Every record in its stored form, one JSON object a line: each line's SHA-256 (hex) is
    the next line's "prev", so the chain can be checked with other tools."""
    start: int | None = 1
    out = sys.stdout
    while start is not None:
        r = s.call("audit.export", {"start": start})
        for line in r["records"]:
            out.write(line + "\n")
        start = r["next"]
    out.flush()


@audit.command()
@node_options
@pass_settings
def checkpoint(s: Settings) -> None:
    """Sign the log's head (its record count and last digest) into the sigchain now (a
    running agent does it every hour when the log moved)."""
    r = s.call("audit.checkpoint")
    if r["signed"]:
        human = f"Signed a checkpoint of {r['count']} records (sigchain entry {r['seq']})."
    else:
        human = f"Nothing new to sign: {r['count']} records, checkpointed already."
    emit(s, human, r)


@click.command()
@node_options
@click.argument("node_ref", metavar="NODEID|NAME")
@pass_settings
def exposure(s: Settings, node_ref: str) -> None:
    """What a node could read, what it pulled (which secrets, which commit, when), and which
    of those are still current: to rotate (`pk secrets generate V:PATH --rotate`).

    Shows the reports kept when its access ended (`pk vaults unshare`, a child revoked);
    for a node that still has access, what it holds now (not kept)."""
    r = s.call("exposure.show", {"node": node_ref})
    emit(s, "\n\n".join(_report(x, r["live"]) for x in r["reports"]), r)


def _report(r: dict[str, Any], live: bool) -> str:
    label = f" ({shown(r['label'])})" if r.get("label") else ""
    when = "now" if live else _when(r["at"])
    lines = [f"Node {shown(r['node_id'])}{label}: {shown(r['reason'])}, {when}"]
    for v in r["vaults"]:
        perms = ", ".join(v["permissions"]) or "none"
        folder = f" (folder {shown(v['folder'])})" if v.get("folder") else ""
        got = v.get("received")
        if got is None:
            lines.append(f"  {shown(v['name'])}{folder}: could {perms}; never pulled")
            continue
        held = "" if got.get("held", True) else " (a derived vault)"
        lines.append(
            f"  {shown(v['name'])}{folder}: could {perms}; received commit "
            f"{shown(got['commit'][:12])}{held} on {_when(got['at'])} ({got['fetches']} fetches)"
        )
        for sec in v["secrets"]:
            state = "still current: needs rotation" if sec["still_current"] else "changed since"
            lines.append(f"    {shown(sec['path'])}  {state}")
    n = r["needs_rotation"]
    lines.append(f"{n} secret{'s' * (n != 1)} need{'s' * (n == 1)} rotation.")
    return "\n".join(lines)
