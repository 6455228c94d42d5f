"""`pk keys ...`: the node's public key, password, recovery, signatures and encryption."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import click

from polykey.cli.common import (
    ENV_NEW_PASSWORD,
    ENV_RECOVERY_CODE,
    Settings,
    emit,
    format_option,
    node_options,
    pass_settings,
    read_input,
    read_new_secret,
    read_recovery_code,
    write_output,
)
from polykey.errors import NodeNotFound

MAX_SIGNATURE_BYTES = 16 * 1024

output_option = click.option(
    "-o",
    "--output",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this new file instead of standard output.",
)


@click.group()
def keys() -> None:
    """The node's key pair: public key, password, recovery, sign, verify, encrypt, decrypt."""


@keys.command()
@node_options
@pass_settings
def public(s: Settings) -> None:
    """The NodeId, and the public key in OpenSSH format."""
    r = s.call("keys.public")
    emit(s, f"{r['node_id']}\n{r['openssh']}", r)


@keys.command()
@node_options
@click.option(
    "--new-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the new password from this file. Else PK_NEW_PASSWORD, else a prompt (twice).",
)
@pass_settings
def password(s: Settings, new_password_file: Path | None) -> None:
    """Change the password (the current one is asked first, the new one twice)."""
    client = s.agent()
    if client is not None:  # the agent holds the data key: it checks the old password itself
        old = s.password("Current password")
        new = read_new_secret(new_password_file, ENV_NEW_PASSWORD, "New password")
        try:
            client.call(
                "keys.password", {"old_password": old.decode(), "new_password": new.decode()}
            )
        finally:
            client.close()
    else:
        with s.open_node() as n:
            new = read_new_secret(new_password_file, ENV_NEW_PASSWORD, "New password")
            n.change_password(new, kdf=s.kdf_cost())
    emit(s, "Password changed.", {"changed": True})


@keys.command()
@node_options
@click.option(
    "--recovery-code-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the recovery code from this file. Else PK_RECOVERY_CODE, else a prompt.",
)
@click.option(
    "--new-password-file",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Read the new password from this file. Else PK_NEW_PASSWORD, else a prompt (twice).",
)
@pass_settings
def recover(s: Settings, recovery_code_file: Path | None, new_password_file: Path | None) -> None:
    """Set a new password with the recovery code, when the password is lost."""
    from polykey.ids import encode_node_id
    from polykey.node import Node

    path = s.node_path()
    if not path.exists():
        raise NodeNotFound(str(path))
    code = read_recovery_code(recovery_code_file, ENV_RECOVERY_CODE)
    new = read_new_secret(new_password_file, ENV_NEW_PASSWORD, "New password")
    with Node.recover(path, code, new, kdf=s.kdf_cost(), allow_weak=s.allow_weak()) as n:
        node_id = encode_node_id(n.node_id)
    emit(s, f"New password set for {node_id}.", {"node_id": node_id, "recovered": True})


@keys.command()
@node_options
@click.argument("file")
@output_option
@pass_settings
def sign(s: Settings, file: str, output: Path | None) -> None:
    """Sign FILE ('-' for stdin): an SSH signature, as `ssh-keygen -Y sign -n file` makes."""
    signature = s.call("keys.sign", {"data": read_input(file)})["signature"]
    if s.json and output is None:
        emit(s, "", {"signature": signature})
    else:
        write_output(signature.encode(), output, binary=False)


@keys.command()
@format_option
@click.argument("file")
@click.argument("signature", type=click.Path(dir_okay=False, path_type=Path))
@click.argument("node_id", metavar="NODEID")
@pass_settings
def verify(s: Settings, file: str, signature: Path, node_id: str) -> None:
    """Check that SIGNATURE is NODEID's signature of FILE. Exit 0 only when it is."""
    from polykey.ids import decode_node_id
    from polykey.node import verify_file

    signer = decode_node_id(node_id)
    sig = read_input(str(signature), "signature")[: MAX_SIGNATURE_BYTES + 1]
    verify_file(read_input(file), sig, signer)
    emit(s, f"Good signature by {node_id}.", {"valid": True, "node_id": node_id})


@keys.command()
@format_option
@click.argument("file")
@click.option(
    "--to",
    "recipients",
    metavar="NODEID",
    multiple=True,
    required=True,
    help="A node that may read it (repeat for several).",
)
@click.option("-a", "--armor", is_flag=True, help="Write ASCII armor instead of binary.")
@output_option
@pass_settings
def encrypt(
    s: Settings, file: str, recipients: tuple[str, ...], armor: bool, output: Path | None
) -> None:
    """Encrypt FILE so that only the given nodes can read it (the age format).

    Needs no node of your own. The result also opens with `age -d -i KEY` given the
    recipient's OpenSSH private key.
    """
    from polykey.ids import decode_node_id
    from polykey.node import encrypt_to

    ids = [decode_node_id(r) for r in recipients]
    write_output(encrypt_to(read_input(file), ids, armor=armor), output, binary=not armor)


@keys.command()
@node_options
@click.argument("file")
@output_option
@pass_settings
def decrypt(s: Settings, file: str, output: Path | None) -> None:
    """Decrypt FILE (an age file encrypted to this node) to standard output or --output."""
    plain = s.call("keys.decrypt", {"data": read_input(file)})["data"]
    write_output(plain, output, binary=False)


@keys.command("ssh-key")
@node_options
@click.option(
    "-o",
    "--output",
    required=True,
    type=click.Path(dir_okay=False, path_type=Path),
    help="The new file (mode 0600) for the OpenSSH private key.",
)
@click.option(
    "--yes", is_flag=True, help="Confirm: the private key is written to disk unencrypted."
)
@pass_settings
def ssh_key(s: Settings, output: Path, yes: bool) -> None:
    """Write the node's private key in OpenSSH format, for stock ssh and git (`ssh -i FILE`).

    The file is the node's identity in plaintext: keep it on encrypted storage, delete it after.
    """
    from polykey.errors import UsageError

    if not yes:
        raise UsageError(
            "refusing to write the private key without --yes",
            hint="It is written unencrypted; add --yes if that is what you want.",
        )
    pem = s.call("keys.openssh_private")["pem"]
    write_output(pem, output, binary=False)
    emit(s, f"Wrote the node's OpenSSH private key to {output} (mode 0600).", {"path": str(output)})


@keys.command("known-hosts")
@node_options
@click.argument("node_id", metavar="NODEID")
@click.option("--host", help="The host name or address you connect to (else the stored one).")
@click.option("--port", type=click.IntRange(1, 65535), help="Its port (else the stored one).")
@pass_settings
def known_hosts(s: Settings, node_id: str, host: str | None, port: int | None) -> None:
    """The known_hosts line of NODEID's agent, for stock ssh and git (`git clone ssh://...`).

    A node's SSH host key is its NodeId: the line needs no connection and no trust in the
    network. HOST and PORT are the address `pk nodes add` stored for NODEID (for this node's
    own NodeId, the address its running agent serves); --host and --port name another, such as
    the host name you put in the git URL. Append the line to the file ssh reads
    (UserKnownHostsFile).
    """
    from polykey.crypto.signing import openssh_public_line
    from polykey.ids import decode_node_id

    key = openssh_public_line(bytes(decode_node_id(node_id)))
    if host is None or port is None:
        stored = _address(s, node_id)
        host = stored[0] if host is None else host
        port = stored[1] if port is None else port
    if any(c.isspace() or c in ",#[]" or ord(c) < 0x20 for c in host) or not host:
        from polykey.errors import InvalidInput

        raise InvalidInput(f"not a host name or address: {host[:80]!r}")
    pattern = host if port == 22 else f"[{host}]:{port}"
    line = f"{pattern} {key} {node_id}"
    emit(s, line, {"node_id": node_id, "host": host, "port": port, "line": line})


def _address(s: Settings, node_id: str) -> tuple[str, int]:
    """Where NODEID is served: its stored address, or this node's agent's for its own NodeId."""
    from polykey.cli.client import AgentError, AgentGone
    from polykey.network.graph import UnknownNode

    client = s.agent()
    if client is not None:
        try:
            status = client.call("agent.status", {}, token=False)
        except (AgentGone, AgentError):  # the node file answers below
            status = {}
        finally:
            client.close()
        peers = str(status.get("peers") or "")
        if status.get("node_id") == node_id and peers:
            host, _, port = peers.rpartition(":")
            host = host.strip("[]")
            if host in ("0.0.0.0", "::", ""):  # noqa: S104 - read, not bound
                host = "127.0.0.1"  # every address: this machine's is one (--host for others)
            return host, int(port)
    for known in s.call("nodes.list")["nodes"]:
        if known["node_id"] == node_id:
            host, _, port = str(known["address"]).rpartition(":")
            return host.strip("[]"), int(port)
    raise UnknownNode(
        node_id,
        hint=f"Give --host and --port, or store it with `pk nodes add {node_id} HOST:PORT`.",
    )


@keys.command()
@node_options
@click.option(
    "--recovery-code-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the new recovery code to this new file (mode 0600) instead of printing it.",
)
@pass_settings
def renew(s: Settings, recovery_code_out: Path | None) -> None:
    """A new key pair and NodeId, joined to the old one by a rotate-key claim both keys sign.

    The nodes this one knows are told at once and move its grants and address to the new
    NodeId (the others when this node next pulls from them); history signed by the old key
    still verifies. Prints the new recovery code once: the old one restores the old key. A
    running agent renews and serves peers with the new key at once (its peer port, discovery
    and relay registration made again).
    """
    from polykey.cli.safe_text import shown

    out_fd = _code_file(recovery_code_out)  # made before the renewal: never a code lost
    try:
        r = s.call("keys.renew", {})
    except BaseException:
        _drop_code_file(out_fd, recovery_code_out)
        raise
    # The node keeps the new code (sealed) until it is handed over: a command killed before
    # that loses nothing, `pk keys pending-code` shows it.
    code = r.pop("recovery_code")
    lines = [f"Renewed {r['old']}", f"     as {r['node_id']}"]
    lines += [f"  {peer}: {shown(how)}" for peer, how in sorted(r["told"].items())]
    _hand_over(s, code, out_fd, recovery_code_out, lines, r)


@keys.command("pending-code")
@node_options
@click.option(
    "--recovery-code-out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write the recovery code to this new file (mode 0600) instead of printing it.",
)
@pass_settings
def pending_code(s: Settings, recovery_code_out: Path | None) -> None:
    """The new recovery code of a renewal whose command died before it showed it. Shown
    once: the node then no longer keeps it (the old code no longer recovers the node)."""
    from polykey.errors import InvalidInput

    out_fd = _code_file(recovery_code_out)
    code = s.call("keys.pending_code")["recovery_code"]
    if code is None:
        _drop_code_file(out_fd, recovery_code_out)
        raise InvalidInput(
            "no renewal's recovery code is waiting",
            hint="Each renewal's code is shown when `pk keys renew` ends.",
        )
    _hand_over(s, str(code), out_fd, recovery_code_out, [], {})


def _code_file(path: Path | None) -> int | None:
    """A new file for a recovery code, mode 0600, or None without ``path``."""
    import os

    from polykey.errors import InvalidInput

    if path is None:
        return None
    try:
        return os.open(path, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise InvalidInput(f"{path} already exists", hint="Choose a new file.") from None
    except OSError as exc:
        raise InvalidInput(f"cannot create {path}: {exc.strerror}") from None


def _drop_code_file(fd: int | None, path: Path | None) -> None:
    import os

    if fd is not None and path is not None:
        os.close(fd)
        path.unlink()


def _hand_over(
    s: Settings,
    code: str,
    fd: int | None,
    path: Path | None,
    lines: list[str],
    r: dict[str, Any],
) -> None:
    """Give the user ``code`` (to the file ``fd``, synced, or in the output), then tell the
    node it was handed over, so that it stops keeping it."""
    import os
    import sys

    from polykey.cli.nodes import RECOVERY_NOTICE

    if fd is not None:
        with os.fdopen(fd, "w") as f:
            f.write(code + "\n")
            f.flush()
            os.fsync(f.fileno())
        lines.append(f"New recovery code written to {path}")
    else:
        r["recovery_code"] = code
        lines += ["", "New recovery code:", "", f"    {code}", "", RECOVERY_NOTICE]
    emit(s, "\n".join(lines).lstrip("\n"), r)
    sys.stdout.flush()
    s.call("keys.code_handed")


@keys.command("revoke-old")
@node_options
@click.option(
    "--compromised",
    is_flag=True,
    required=True,
    help="Confirm: the old key was stolen (it is then dropped, not kept sealed).",
)
@click.option(
    "--after",
    "after",
    metavar="TIME",
    help="When it was stolen: unix seconds or ISO 8601 (default: now).",
)
@click.option("--old", "old", metavar="NODEID", help="The old NodeId (default: the last one).")
@pass_settings
def revoke_old(s: Settings, compromised: bool, after: str | None, old: str | None) -> None:
    """After a theft: signatures by the old key made after TIME are refused, here and by
    the nodes told (commits, sigchain claims). History signed before TIME still verifies."""
    r = s.call("keys.revoke_old", {"after": _when(after), "node_id": old})
    rot = r["rotation"]
    lines = [f"Revoked {rot['old']}: its signatures after {rot['until']} are refused."]
    lines += [f"  {peer}: {how}" for peer, how in sorted(r["told"].items())]
    emit(s, "\n".join(lines), r)


@keys.command()
@node_options
@pass_settings
def renewals(s: Settings) -> None:
    """Every key renewal this node knows: its own and its peers' (old -> new, until when)."""
    r = s.call("keys.renewals")
    lines = [
        f"{x['old']} -> {x['new']} until {x['until']}{' (own)' if x['own'] else ''}"
        + (f" compromised after {x['compromised']}" if x["compromised"] is not None else "")
        for x in r["renewals"]
    ]
    if r.get("code_waiting"):
        lines.append("The last renewal's recovery code was never shown: `pk keys pending-code`.")
    emit(s, "\n".join(lines) or "No renewals.", r)


def _when(text: str | None) -> int:
    """Unix seconds from TIME: whole seconds, or ISO 8601 (UTC unless it says)."""
    import datetime
    import time

    if text is None:
        return int(time.time())
    if text.isdigit():
        return int(text)
    try:
        when = datetime.datetime.fromisoformat(text)
    except ValueError:
        from polykey.errors import InvalidInput

        raise InvalidInput(
            f"not a time: {text[:40]!r}", hint="Give unix seconds or 2024-05-01T12:00:00Z."
        ) from None
    if when.tzinfo is None:
        when = when.replace(tzinfo=datetime.UTC)
    return int(when.timestamp())
