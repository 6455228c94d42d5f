"""`pk bootstrap` and `pk node ...`: create a node, describe it, check it, copy it, salvage it."""

from __future__ import annotations

import os
from pathlib import Path

import click

from polykey.cli.common import (
    ENV_RECOVERY_CODE,
    Settings,
    emit,
    node_options,
    pass_settings,
    read_new_secret,
    read_recovery_code,
    table,
)
from polykey.errors import InvalidInput, NodeDamaged, NodeExists

RECOVERY_NOTICE = (
    "Write the recovery code down and keep it offline. It is shown only this once; with it you\n"
    "can set a new password (`pk keys recover`) and restore this node's identity."
)


@click.command()
@node_options
@click.option(
    "--recovery-code-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Restore an identity: use the recovery code in this file instead of a new one.",
)
@click.option(
    "--recovery-code-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the new recovery code to this new file (mode 0600) instead of printing it.",
)
@pass_settings
def bootstrap(s: Settings, recovery_code_file: Path | None, recovery_code_out: Path | None) -> None:
    """Create a new node file: a new key pair, NodeId and recovery code.

    Asks for the new password twice (or takes it from --password-file / PK_PASSWORD) and prints
    the 24-word recovery code once. Refuses to overwrite an existing node.
    """
    from polykey.ids import encode_node_id
    from polykey.node import Node

    path = s.node_path()
    if path.exists():
        raise NodeExists(str(path))
    code = None
    if recovery_code_file is not None:
        code = read_recovery_code(recovery_code_file, ENV_RECOVERY_CODE)
    password = read_new_secret(s.password_file, "PK_PASSWORD", "New password")
    out_fd = None
    if recovery_code_out is not None:  # made before the node, so the code can never be lost
        try:
            out_fd = os.open(recovery_code_out, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
        except FileExistsError:
            raise InvalidInput(
                f"{recovery_code_out} already exists", hint="Choose a new file."
            ) from None
        except OSError as exc:
            raise InvalidInput(f"cannot create {recovery_code_out}: {exc.strerror}") from None
    try:
        node, code = Node.bootstrap(
            path, password, kdf=s.kdf_cost(), code=code, allow_weak=s.allow_weak()
        )
    except BaseException:
        if out_fd is not None and recovery_code_out is not None:
            os.close(out_fd)
            recovery_code_out.unlink()
        raise
    with node:
        node_id = encode_node_id(node.node_id)
    shown = recovery_code_file is None and recovery_code_out is None
    if out_fd is not None:
        with os.fdopen(out_fd, "w") as f:
            f.write(str(code) + "\n")
            f.flush()
            os.fsync(f.fileno())
    doc: dict[str, object] = {"node_id": node_id, "path": str(path)}
    if shown:
        doc["recovery_code"] = str(code)
    lines = [f"Created node {node_id}", f"Node file: {path}"]
    if shown:
        lines += ["", "Recovery code:", "", f"    {code}", "", RECOVERY_NOTICE]
    elif recovery_code_out is not None:
        lines.append(f"Recovery code written to {recovery_code_out}")
    emit(s, "\n".join(lines), doc)


@click.group()
def node() -> None:
    """Describe, check, copy and salvage the node file."""


@node.command()
@node_options
@pass_settings
def info(s: Settings) -> None:
    """NodeId, node file path, format version, KDF parameters and vault count."""
    i = s.call("node.info")
    kdf = i["kdf"]
    kdf_text = (
        f"argon2id, {kdf['memory_kib'] / 1024:g} MiB, {kdf['iterations']} iterations, "
        f"{kdf['lanes']} lanes"
    )
    rows = [
        ("NodeId", i["node_id"]),
        ("Node file", i["path"]),
        ("Format", str(i["format"])),
        ("KDF", kdf_text),
        ("Created", i["created"]),
        ("Vaults", str(i["vault_count"])),
    ]
    emit(s, table(rows), i)


STRUCTURE = {"root", "SQLite structure", "node file"}  # places of store/nodefile.py's check
STRUCTURE_HINT = (
    "The damage is in the file's own structure (its SQLite pages or its root record), so "
    "the records cannot be told apart: restore the node file from a copy or a backup node, "
    "or salvage every record that still authenticates into a new node: "
    "`pk node salvage NEW_PATH`."
)
ROOT_HINT = (
    "The root record is damaged, so no record can be read through it: salvage every record "
    "that still authenticates into a new node with `pk node salvage NEW_PATH` (the same "
    "NodeId and password), or restore the node file from a copy or a backup node."
)


@node.command()
@node_options
@pass_settings
def check(s: Settings) -> None:
    """Authenticate every record; list the damage by name. Exit 0 only when whole."""
    from polykey.errors import NodeNotFound
    from polykey.node import Node
    from polykey.store.nodefile import Damage

    path = s.node_path()
    if not path.exists():
        raise NodeNotFound(str(path))
    try:
        if s.agent() is not None:
            found = s.call("node.check")["damage"]
            damage = [Damage(d["place"], d["problem"], d.get("kind", "record")) for d in found]
        else:
            damage = Node.check_file(path, s.password(), allow_weak=s.allow_weak())
    except NodeDamaged as exc:  # its usual hint is to run this very command
        raise NodeDamaged(exc.detail, hint=STRUCTURE_HINT) from None
    if s.json:
        emit(
            s,
            "",
            {
                "ok": not damage,
                "damage": [
                    {"place": d.place, "problem": d.problem, "kind": d.kind} for d in damage
                ],
            },
        )
    elif not damage:
        emit(s, "The node file is whole: every record authenticated.", {})
    else:
        from polykey.cli.safe_text import shown

        for d in damage:  # a place names vaults and secrets, which may come from other nodes
            click.echo(f"damaged: {shown(d)}", err=True)
    if damage:
        if any(d.place == "root" or "the root record" in d.problem for d in damage):
            hint = ROOT_HINT
        elif any(d.place in STRUCTURE for d in damage):
            hint = STRUCTURE_HINT
        elif all(d.kind == "history" for d in damage):
            hint = (
                "Every record authenticates, but the vaults listed hold objects of the wrong "
                "type or miss some: clone them again from a node that holds them whole."
            )
        elif any(d.problem.startswith("the manifest of ") for d in damage):
            hint = (
                "A damaged manifest makes its whole namespace unreadable: restore the node "
                "from a backup node, or salvage every record that still authenticates into a "
                "new node with `pk node salvage NEW_PATH`."
            )
        else:
            hint = (
                "Places not listed are intact; restore the damaged ones from a backup node "
                "with `pk backup restore PATH`."
            )
        raise NodeDamaged(f"{len(damage)} damaged place(s)", hint=hint)


@node.command("copy")
@node_options
@click.argument("path", type=click.Path(path_type=Path))
@pass_settings
def copy_(s: Settings, path: Path) -> None:
    """Copy the node file to PATH: one consistent file, safe while the agent runs.

    Needs no password (the copy is as encrypted as the node). PATH may be a folder; an existing
    file is never replaced. The copy is checked before it appears: it opens as a node file and
    SQLite finds it sound. It is the same node, with the same key: keep it as a copy, or move
    it, but do not use both as live nodes (they would diverge).
    """
    from polykey.store.nodefile import copy_node

    source = Path(os.path.abspath(s.node_path()))
    target = Path(os.path.abspath(copy_node(source, path)))
    size = target.stat().st_size
    doc = {"source": str(source), "path": str(target), "bytes": size}
    emit(s, f"Copied the node to {target} ({_size(size)}).", doc)


@node.command()
@node_options
@click.argument("new_path", metavar="NEW_PATH", type=click.Path(dir_okay=False, path_type=Path))
@pass_settings
def salvage(s: Settings, new_path: Path) -> None:
    """Write a new node at NEW_PATH of every record of this node file that still authenticates.

    For a node that every command refuses because its root record or a manifest is damaged.
    The damaged file is only read, never changed; neither its root record nor its manifests
    are trusted. The new node has the same key (NodeId), password, KDF parameters and recovery
    code, and a fresh root and manifests; every git object is checked against its id. Prints
    what was salvaged, what was lost (by name where known), which vaults have an incomplete
    history, and what to do next. Exit 0 when everything authenticated and the new node is
    whole; 14 when something was lost (the new node is written all the same). Stop the
    agent of the damaged node first.
    """
    from polykey.errors import NodeNotFound
    from polykey.salvage import check_target, salvage

    source = Path(os.path.abspath(s.node_path()))
    target = Path(os.path.abspath(new_path))
    if not source.exists():
        raise NodeNotFound(str(source))
    check_target(source, target)  # before asking for the password
    report = salvage(source, target, s.password(), allow_weak=s.allow_weak())
    emit(s, report.text(), report.to_json())
    if not report.ok:
        lost = report.lost_count
        parts = [f"{lost} record(s) could not be salvaged"] if lost else []
        if report.unreadable:
            parts.append("parts of the file could not be read")
        if report.incomplete:
            parts.append(f"{len(report.incomplete)} vault(s) have an incomplete history")
        if report.damage:
            parts.append(f"the new node's check found {len(report.damage)} problem(s)")
        raise NodeDamaged(
            f"{'; '.join(parts)}; the new node was written at {target}",
            hint=report.next_steps()[0],
        )


def _size(count: int) -> str:
    if count < 1024:
        return f"{count} bytes"
    value = count / 1024
    for unit in ("KiB", "MiB"):
        if value < 1024:
            return f"{value:.1f} {unit}"
        value /= 1024
    return f"{value:.1f} GiB"


# --- discovery (docs/spec/discovery.md): `pk nodes find`, `relays`, `dht-bootstrap` ----------
# Commands of the `pk nodes` group (cli/peers.py adds them).

HOW_SHOWN = {
    "cache": "known here",
    "manual": "added by hand",
    "lan": "found on the LAN (mDNS)",
    "relay": "found through a Pkarr relay",
    "dht": "found in the Mainline DHT",
    "peer": "told by a peer",
}


@click.command()
@node_options
@click.argument("node_id", metavar="NODEID")
@click.option("--fresh", is_flag=True, help="Ask the network even if an address is known.")
@pass_settings
def find(s: Settings, node_id: str, fresh: bool) -> None:
    """Where NODEID is, and how that is known: the node graph, the LAN, the relays.

    An address found is kept, so the next command reaches the node at once. Finding it
    proves nothing: connecting does (the NodeId is the SSH host key).
    """
    from polykey.cli.safe_text import shown

    if s.agent() is not None:
        r = s.call("nodes.find", {"node_id": node_id, "fresh": fresh})
    else:
        r = _find_here(s, node_id, fresh)
    how = HOW_SHOWN.get(r["how"], r["how"])
    if r["how"] == "cache":
        how += f", {HOW_SHOWN.get(r['source'], r['source'])}"
        how += f" {r['at']}" if r.get("at") else ""
    elif r.get("source"):
        how += f" {r['source']}"
    via = [f"  via relay {shown(str(v).partition('@')[0])}" for v in r.get("relays") or []]
    if not r["addresses"]:
        via = [f"{v} (reachable only through a relay)" for v in via[:1]] + via[1:]
    lines = [shown(node_id), *(f"  {shown(a)}" for a in r["addresses"]), *via, f"  ({shown(how)})"]
    emit(s, "\n".join(lines), r)


def _find_here(s: Settings, node_id: str, fresh: bool) -> dict[str, object]:
    """No agent: the node file's graph and its relays (no LAN: that is the agent's)."""
    from polykey.agent.methods.control import found_doc
    from polykey.ids import decode_node_id

    with s.open_node() as node:
        return found_doc(node_id, node.peers.find(decode_node_id(node_id), fresh=fresh))


@click.command()
@node_options
@click.argument("urls", metavar="[URL]...", nargs=-1)
@click.option("--clear", is_flag=True, help="Use no relay at all.")
@pass_settings
def relays(s: Settings, urls: tuple[str, ...], clear: bool) -> None:
    """Show the Pkarr relays, or set them: `pk nodes relays URL...` (`--clear`: none).

    An agent serving peers publishes this node's signed address record to them, and nodes are
    looked up in them. There are none by default: nothing is published until set.
    """
    from polykey.errors import UsageError

    if clear and urls:
        raise UsageError("give URLs or --clear, not both")
    params: dict[str, object] = {"relays": [] if clear else list(urls)} if clear or urls else {}
    if s.agent() is not None:
        r = s.call("nodes.relays", params)
    else:
        r = _relays_here(s, params.get("relays"))
    shown_list = "\n".join(r["relays"]) or "No relay: this node publishes nothing."
    emit(s, shown_list, r)


def _relays_here(s: Settings, urls: object) -> dict[str, object]:
    from polykey.network.relays import check_relay_url

    with s.open_node() as node:
        if isinstance(urls, list):
            node.graph.set_relays(list(dict.fromkeys(check_relay_url(u) for u in urls)))
        return {"relays": node.graph.relays()}


@click.command("dht-bootstrap")
@node_options
@click.argument("entries", metavar="[HOST:PORT|mainline]...", nargs=-1)
@click.option("--clear", is_flag=True, help="No bootstrap list: the DHT stays off.")
@pass_settings
def dht_bootstrap(s: Settings, entries: tuple[str, ...], clear: bool) -> None:
    """Show the Mainline DHT bootstrap list, or set it (`--clear`: none, the DHT off).

    An agent joins the DHT from these nodes, to publish this node's signed address record and
    look others up: HOST:PORT of DHT nodes, or `mainline` for the public DHT's routers (needs
    libtorrent: pip install polykey[dht]). None by default: nothing is sent to the DHT. Used
    from the next `pk agent start`; PK_DHT_BOOTSTRAP, when set, overrides it.
    """
    from polykey.errors import UsageError

    if clear and entries:
        raise UsageError("give entries or --clear, not both")
    params: dict[str, object] = {}
    if clear or entries:
        params = {"bootstrap": [] if clear else list(entries)}
    if s.agent() is not None:
        r = s.call("nodes.dht_bootstrap", params)
    else:
        r = _dht_bootstrap_here(s, params.get("bootstrap"))
    emit(s, "\n".join(_dht_lines(r, changed=bool(params))), r)


def _dht_bootstrap_here(s: Settings, entries: object) -> dict[str, object]:
    from polykey.network.dht import bootstrap_entries

    with s.open_node() as node:
        if isinstance(entries, list):
            node.graph.set_dht_bootstrap(bootstrap_entries(entries) if entries else [])
        return {"bootstrap": node.graph.dht_bootstrap()}


def _dht_lines(r: dict[str, object], *, changed: bool) -> list[str]:
    """The list; then what it means now: the agent's own list (which it keeps until it
    starts again), PK_DHT_BOOTSTRAP overriding it, libtorrent missing."""
    from polykey.cli.safe_text import shown
    from polykey.network.dht import available

    listed = r["bootstrap"]
    assert isinstance(listed, list)
    lines = [shown(e) for e in listed] or ["No DHT bootstrap list: the DHT is off."]
    if changed:
        lines.append("Used from the next `pk agent start`.")
    if os.environ.get("PK_DHT_BOOTSTRAP", "").strip():
        lines.append("PK_DHT_BOOTSTRAP is set here: an agent started with it uses that instead.")
    used = r.get("in_use")
    if isinstance(used, list) and r.get("from") == "PK_DHT_BOOTSTRAP":
        lines.append(f"The running agent uses PK_DHT_BOOTSTRAP: {', '.join(map(shown, used))}.")
    elif isinstance(used, list) and used != _expanded(listed) and "from" in r:
        now = ", ".join(map(shown, used)) or "none (DHT off)"
        lines.append(f"The running agent uses the list it started with: {now}.")
    if listed and not available():
        lines.append("libtorrent is not installed: the DHT stays off (pip install polykey[dht]).")
    return lines


def _expanded(entries: list[object]) -> list[str]:
    from polykey.network.dht import parse_bootstrap

    if not entries:
        return []
    return [str(a) for a in parse_bootstrap(",".join(str(e) for e in entries))]


# --- seeds and the home relay (docs/spec/discovery.md sections 9, 10) ------------------------


@click.group()
def seeds() -> None:
    """The seed nodes asked where other nodes are (none by default)."""


def _show_seeds(s: Settings, r: dict[str, object]) -> None:
    listed = r["seeds"]
    assert isinstance(listed, list)
    emit(s, "\n".join(str(x) for x in listed) or "No seed: nothing is asked.", r)


@seeds.command("add")
@node_options
@click.argument("seed", metavar="NODEID@HOST:PORT|DOMAIN")
@click.option(
    "--nameserver",
    metavar="HOST[:PORT]",
    help="For a DOMAIN: the DNS server asked for its _polykey._tcp SRV records.",
)
@pass_settings
def seeds_add(s: Settings, seed: str, nameserver: str | None) -> None:
    """Add a seed: a node (NODEID@HOST:PORT), or a DOMAIN whose DNS SRV records
    `_polykey._tcp.DOMAIN` name seeds (each target with a TXT `v=1` `node=NODEID`)."""
    _show_seeds(s, s.call("nodes.seeds", {"add": [seed], "nameserver": nameserver or ""}))


@seeds.command("list")
@node_options
@pass_settings
def seeds_list(s: Settings) -> None:
    """The seeds."""
    _show_seeds(s, s.call("nodes.seeds", {}))


@seeds.command("rm")
@node_options
@click.argument("seed", metavar="NODEID@HOST:PORT|DOMAIN")
@pass_settings
def seeds_rm(s: Settings, seed: str) -> None:
    """Remove a seed."""
    _show_seeds(s, s.call("nodes.seeds", {"remove": [seed]}))


@click.command("home-relay")
@node_options
@click.argument("relay", metavar="[NODEID@HOST:PORT]", required=False)
@click.option("--clear", is_flag=True, help="Register with no relay.")
@pass_settings
def home_relay(s: Settings, relay: str | None, clear: bool) -> None:
    """Show or set the relay this node registers with when its agent serves peers, so that
    nodes reach it through the relay from behind NAT. None by default; used from the next
    `pk agent start` (`--via-relay` overrides it)."""
    from polykey.errors import UsageError

    if clear and relay:
        raise UsageError("give a relay or --clear, not both")
    params: dict[str, object] = {"relay": ""} if clear else {"relay": relay} if relay else {}
    r = s.call("nodes.home_relay", params)
    emit(s, str(r["relay"] or "No home relay: this node registers with none."), r)
