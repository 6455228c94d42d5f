"""`pk keys ...`: the node's public key, password, recovery, signatures and encryption."""

from __future__ import annotations

from pathlib import Path

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
