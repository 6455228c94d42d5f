"""The root command group; subcommands are imported only when they are invoked."""

from __future__ import annotations

import importlib
from typing import Any

import click

from polykey import __version__

_COMMANDS: dict[str, tuple[str, str]] = {
    "bootstrap": ("polykey.cli.nodes", "bootstrap"),
    "node": ("polykey.cli.nodes", "node"),
    "keys": ("polykey.cli.keys", "keys"),
    "vaults": ("polykey.cli.vaults", "vaults"),
    "secrets": ("polykey.cli.secrets", "secrets"),
    "tags": ("polykey.cli.tags", "tags"),
    "agent": ("polykey.cli.agent", "agent"),
    "nodes": ("polykey.cli.peers", "nodes"),
    "notifications": ("polykey.cli.peers", "notifications"),
    "run": ("polykey.cli.inject", "run"),
    "read": ("polykey.cli.inject", "read"),
    "inject": ("polykey.cli.inject", "inject"),
    "otp": ("polykey.cli.otp", "otp"),
    "import": ("polykey.cli.interop", "import_"),
    "export": ("polykey.cli.interop", "export"),
    "completion": ("polykey.cli.completion", "completion"),
    "backup": ("polykey.cli.backup", "backup"),
    "identities": ("polykey.cli.identities", "identities"),
    "gestalts": ("polykey.cli.identities", "gestalts"),
    "sigchain": ("polykey.cli.identities", "sigchain"),
    "health": ("polykey.cli.health", "health"),
    "audit": ("polykey.cli.audit", "audit"),
    "exposure": ("polykey.cli.audit", "exposure"),
    "child": ("polykey.cli.child", "child"),
}


class LazyGroup(click.Group):
    """A group whose subcommands live in modules imported on first use."""

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted(_COMMANDS)

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        target = _COMMANDS.get(cmd_name)
        if target is None:
            return None
        module = importlib.import_module(target[0])
        command: Any = getattr(module, target[1])
        assert isinstance(command, click.Command)
        return command


# The hard bounds of crypto/kdf.py (MAX_MEMORY_KIB in MiB, MAX_ITERATIONS), kept here so that
# building the command line imports no crypto; a test keeps them equal.
KDF_HARD_MAX_MEMORY_MIB = 4096
KDF_HARD_MAX_ITERATIONS = 64


@click.group(cls=LazyGroup, context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(
    __version__, "-V", "--version", prog_name="pk", message="%(prog)s %(version)s"
)
@click.option(
    "--kdf-max-memory",
    type=click.IntRange(1, KDF_HARD_MAX_MEMORY_MIB),
    envvar="PK_KDF_MAX_MEMORY",
    metavar="MIB",
    help="Open a node whose password key derivation asks for up to MIB MiB of memory "
    "(default: 64, the most `pk bootstrap` uses). Else PK_KDF_MAX_MEMORY.",
)
@click.option(
    "--kdf-max-iterations",
    type=click.IntRange(1, KDF_HARD_MAX_ITERATIONS),
    envvar="PK_KDF_MAX_ITERATIONS",
    metavar="N",
    help="Open a node whose password key derivation asks for up to N passes "
    "(default: 3, the most `pk bootstrap` uses). Else PK_KDF_MAX_ITERATIONS.",
)
@click.option(
    "--node",
    type=click.Path(dir_okay=False),
    help="The node file, for any command (as the command's own --node).",
)
@click.option(
    "--password-file",
    type=click.Path(dir_okay=False),
    help="Read the password from this file, for any command (as the command's own option).",
)
@click.option(
    "--format",
    "output_format",
    type=click.Choice(["human", "json"]),
    default=None,
    help="Output for people, or JSON for programs, for any command that has --format.",
)
@click.pass_context
def cli(
    ctx: click.Context,
    kdf_max_memory: int | None,
    kdf_max_iterations: int | None,
    node: str | None,
    password_file: str | None,
    output_format: str | None,
) -> None:
    """Polykey: a self-hosted, peer-to-peer secret manager.

    A node is one encrypted file holding vaults of secrets. The node file comes from --node PATH,
    else PK_NODE, else the platform data directory. The password comes from --password-file,
    else PK_PASSWORD, else a prompt; never from the command line.

    A node file's header names the cost of its key derivation; one asking for more than
    `pk bootstrap` makes is refused before any work (it may be hostile) unless --kdf-max-memory
    or --kdf-max-iterations, given before the command, allow it.
    """
    from polykey.cli.common import apply_kdf_ceiling

    apply_kdf_ceiling(kdf_max_memory, kdf_max_iterations)
    # given before the command: the command's own options, when given too, win
    ctx.meta["pk.root"] = {
        "node": node,
        "password_file": password_file,
        "output_format": output_format,
    }
