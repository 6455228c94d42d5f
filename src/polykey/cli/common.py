"""What every command shares: where the node is, where passwords come from, how output looks."""

from __future__ import annotations

import functools
import json
import os
import sys
import unicodedata
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeVar

import click

from polykey.errors import (
    EmptyPassword,
    Interrupted,
    InvalidInput,
    PasswordMismatch,
    PolykeyError,
    UsageError,
)

if TYPE_CHECKING:
    from polykey.cli.client import AgentClient
    from polykey.keys.recovery import RecoveryCode
    from polykey.node import KdfCost, Node

F = TypeVar("F", bound=Callable[..., Any])

ENV_NODE = "PK_NODE"
ENV_PASSWORD = "PK_PASSWORD"  # noqa: S105 - the name of a variable, not a password
ENV_NEW_PASSWORD = "PK_NEW_PASSWORD"  # noqa: S105
ENV_PASSWORD_FILE = "PK_PASSWORD_FILE"  # noqa: S105
SYSTEMD_CREDENTIAL = "polykey-password"  # a file in $CREDENTIALS_DIRECTORY
ENV_RECOVERY_CODE = "PK_RECOVERY_CODE"
ENV_UNSAFE_FAST_KDF = "PK_UNSAFE_FAST_KDF"
ENV_KDF_MAX_MEMORY = "PK_KDF_MAX_MEMORY"
ENV_KDF_MAX_ITERATIONS = "PK_KDF_MAX_ITERATIONS"
MAX_SECRET_FILE_BYTES = 64 * 1024


class PasswordUnavailable(PolykeyError):
    """No password was given and there is no terminal to ask for one."""

    exit_code = 4
    hint = (
        "Pass --password-file FILE, set PK_PASSWORD_FILE (or a systemd credential "
        "polykey-password), or run the command in a terminal."
    )


class RecoveryCodeUnavailable(PasswordUnavailable):
    """No recovery code was given and there is no terminal to ask for one."""

    hint = "Pass --recovery-code-file FILE or set PK_RECOVERY_CODE, or run it in a terminal."


@dataclass
class Settings:
    node: Path | None
    password_file: Path | None
    format: str

    @property
    def json(self) -> bool:
        return self.format == "json"

    def node_path(self) -> Path:
        """--node, else PK_NODE, else the platform data directory."""
        if self.node is not None:
            return self.node
        env = os.environ.get(ENV_NODE)
        if env:
            return Path(env)
        import platformdirs

        return Path(platformdirs.user_data_dir("polykey", appauthor=False)) / "node.pk"

    def allow_weak(self) -> bool:
        """Tests set PK_UNSAFE_FAST_KDF=1 to use and open nodes with a fast, weak KDF."""
        return os.environ.get(ENV_UNSAFE_FAST_KDF) == "1"

    def password(self, prompt: str = "Password") -> bytes:
        return read_secret(self.password_file, ENV_PASSWORD, prompt)

    def open_node(self) -> Node:
        from polykey.node import Node

        path = self.node_path()
        if not path.exists():  # tell a missing node before asking for a password
            from polykey.errors import NodeNotFound

            raise NodeNotFound(str(path))
        return Node.open(path, self.password(), allow_weak=self.allow_weak())

    def can_ask_password(self) -> bool:
        return (
            self.password_file is not None
            or ENV_PASSWORD in os.environ
            or password_file_from_env() is not None
            or sys.stdin.isatty()
        )

    def agent(self) -> AgentClient | None:
        """The agent serving this node, unless PK_NO_AGENT=1 or none runs."""
        if os.environ.get("PK_NO_AGENT") == "1":
            return None
        from polykey.cli.client import AgentClient

        return AgentClient.find(self.node_path())

    def call(self, method: str, params: dict[str, Any] | None = None) -> dict[str, Any]:
        """Run a method in the agent when one serves this node, else on the node file itself."""
        params = dict(params or {})
        client = self.agent()
        if client is not None:
            from polykey.cli.client import AgentGone

            try:
                result = self._call_agent(client, method, params)
                for warning in result.pop("warnings", None) or []:
                    from polykey.cli.safe_text import shown

                    sys.stderr.write(f"pk: warning: {shown(warning)}\n")
                return result
            except AgentGone:
                pass  # a stale socket: the agent is gone, work on the file
            finally:
                client.close()
        from polykey.agent import methods

        with self.open_node() as node:
            return methods.call(node, method, params)

    def _call_agent(
        self, client: AgentClient, method: str, params: dict[str, Any]
    ) -> dict[str, Any]:
        from polykey.cli.client import AgentError

        try:
            return client.call(method, params)
        except AgentError as exc:
            if exc.kind != "session":
                raise
            if not self.can_ask_password():
                from polykey.agent.sessions import SessionInvalid

                raise SessionInvalid(
                    exc.message.split(": ", 1)[-1],
                    hint="Set PK_PASSWORD or --password-file, run in a terminal, "
                    "or unlock with `pk agent unlock`.",
                ) from None
            from polykey.cli.safe_text import shown

            sys.stderr.write(f"pk: {shown(exc.message)}; unlocking a new session.\n")
        self.unlock_agent(client)
        return client.call(method, params)

    def unlock_agent(self, client: AgentClient) -> str:
        """Ask the agent for a new session with the password; keep its token (0600 file)."""
        password = self.password().decode()
        token = str(client.call("agent.unlock", {"password": password}, token=False)["token"])
        if not os.environ.get("PK_TOKEN"):
            client.save_token(token)
        else:
            os.environ["PK_TOKEN"] = token  # this process only
        return token

    def kdf_cost(self) -> KdfCost:
        from polykey.node import DEFAULT_KDF, FAST_INSECURE_KDF

        return FAST_INSECURE_KDF if self.allow_weak() else DEFAULT_KDF


def apply_kdf_ceiling(memory_mib: int | None, iterations: int | None) -> None:
    """The most key-derivation work a node file may ask for, in this process and in the agent it
    may start: `pk bootstrap`'s own cost unless --kdf-max-memory / --kdf-max-iterations (or
    PK_KDF_MAX_MEMORY / PK_KDF_MAX_ITERATIONS) say otherwise, for a node made elsewhere."""
    if memory_mib is None and iterations is None and "polykey.crypto.kdf" not in sys.modules:
        return  # the default holds, and `pk` need not import the crypto modules for it
    from polykey.crypto import kdf

    kdf.set_ceiling(
        kdf.Ceiling(
            memory_kib=kdf.BOOTSTRAP_MEMORY_KIB if memory_mib is None else memory_mib * 1024,
            iterations=kdf.BOOTSTRAP_ITERATIONS if iterations is None else iterations,
        )
    )
    for name, value in ((ENV_KDF_MAX_MEMORY, memory_mib), (ENV_KDF_MAX_ITERATIONS, iterations)):
        if value is not None:  # an agent started by this command inherits the environment
            os.environ[name] = str(value)


def node_options(f: F) -> F:
    """--node, --password-file and --format, on every command that opens a node."""
    f = click.option(
        "--password-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Read the password from this file (first line). Else PK_PASSWORD, else a prompt.",
    )(f)
    f = click.option(
        "--node",
        "node",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The node file. Else PK_NODE, else the platform data directory.",
    )(f)
    return format_option(f)


def password_options(f: F) -> F:
    """--node and --password-file, for commands whose output format is their own."""
    f = click.option(
        "--password-file",
        type=click.Path(dir_okay=False, path_type=Path),
        help="Read the password from this file (first line). Else PK_PASSWORD, else a prompt.",
    )(f)
    return click.option(
        "--node",
        "node",
        type=click.Path(dir_okay=False, path_type=Path),
        help="The node file. Else PK_NODE, else the platform data directory.",
    )(f)


def format_option(f: F) -> F:
    f = click.option(
        "--format",
        "output_format",
        type=click.Choice(["human", "json"]),
        default="human",
        show_default=True,
        help="Output for people, or JSON for programs.",
    )(f)
    return f


def _normalise(raw: str) -> bytes:
    return unicodedata.normalize("NFC", raw).encode("utf-8")


def _first_line(data: bytes, source: str) -> str:
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput(f"{source} is not UTF-8 text") from None
    lines = text.splitlines()
    return lines[0] if lines else ""


def read_secret_file(path: Path, what: str) -> str:
    try:
        with path.open("rb") as f:
            data = f.read(MAX_SECRET_FILE_BYTES + 1)
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} file {path}: {exc.strerror}") from None
    if len(data) > MAX_SECRET_FILE_BYTES:
        raise InvalidInput(f"the {what} file {path} is larger than {MAX_SECRET_FILE_BYTES} bytes")
    return _first_line(data, f"the {what} file {path}")


def password_file_from_env() -> Path | None:
    """Where an unattended node's password is: PK_PASSWORD_FILE, else the systemd credential
    ``polykey-password`` ($CREDENTIALS_DIRECTORY, LoadCredential=/LoadCredentialEncrypted=)."""
    named = os.environ.get(ENV_PASSWORD_FILE)
    if named:
        return Path(named)
    creds = os.environ.get("CREDENTIALS_DIRECTORY")
    if creds and (Path(creds) / SYSTEMD_CREDENTIAL).is_file():
        return Path(creds) / SYSTEMD_CREDENTIAL
    return None


def read_secret(file: Path | None, env: str, prompt: str) -> bytes:
    """A password: from the file, else (for the node's password) PK_PASSWORD_FILE, else a
    systemd credential, else the environment variable, else a prompt with echo off."""
    if file is None and env == ENV_PASSWORD:
        file = password_file_from_env()
    if file is not None:
        raw = read_secret_file(file, "password")
    elif env in os.environ:
        raw = os.environ[env]
    else:
        raw = _prompt(prompt)
    if not raw:
        raise EmptyPassword()
    return _normalise(raw)


def read_recovery_code(file: Path | None, env: str) -> RecoveryCode:
    """A recovery code: from the file, else the environment variable, else a prompt."""
    from polykey.keys import recovery

    if file is not None:
        raw = read_secret_file(file, "recovery code")
    elif env in os.environ:
        raw = os.environ[env]
    else:
        raw = _prompt("Recovery code", RecoveryCodeUnavailable)
    return recovery.parse(raw)


def read_new_secret(file: Path | None, env: str, prompt: str) -> bytes:
    """A new password: from the file or environment once, or typed twice at a prompt; a weak
    one is taken, with a warning."""
    if file is None and env == ENV_PASSWORD:
        file = password_file_from_env()
    if file is not None or env in os.environ:
        secret = read_secret(file, env, prompt)
    else:
        first = _prompt(prompt)
        if not first:
            raise EmptyPassword()
        second = _prompt(f"{prompt} (again)")
        import hmac

        if not hmac.compare_digest(_normalise(first), _normalise(second)):
            raise PasswordMismatch()
        secret = _normalise(first)
    weakness = password_weakness(secret)
    if weakness and os.environ.get("PK_UNSAFE_FAST_KDF") != "1":  # tests pick short ones
        sys.stderr.write(
            f"pk: warning: this password is weak ({weakness}): whoever copies the file can "
            "guess offline; a passphrase of four or more random words is far stronger\n"
        )
    return secret


MIN_GOOD_PASSWORD = 12


def password_weakness(secret: bytes) -> str | None:
    """Why a new password is easy to guess offline (never the password itself), or None."""
    text = secret.decode("utf-8", "replace")
    if len(text) < MIN_GOOD_PASSWORD:
        return f"{len(text)} characters, fewer than {MIN_GOOD_PASSWORD}"
    if len(set(text)) <= 3:
        return "it repeats a few characters"
    if text.isdigit():
        return "digits only"
    return None


def _prompt(prompt: str, missing: type[PasswordUnavailable] = PasswordUnavailable) -> str:
    if not sys.stdin.isatty():
        raise missing()
    import getpass

    try:
        return getpass.getpass(f"{prompt}: ")
    except EOFError:
        raise Interrupted("end of input at the prompt") from None


def read_input(path: str, what: str = "input") -> bytes:
    """The bytes of a FILE argument; ``-`` is standard input."""
    if path == "-":
        return sys.stdin.buffer.read()
    try:
        return Path(path).read_bytes()
    except IsADirectoryError:
        raise InvalidInput(f"{path} is a directory, not a file") from None
    except OSError as exc:
        raise InvalidInput(f"cannot read the {what} {path}: {exc.strerror}") from None


def write_output(data: bytes, out: Path | None, *, binary: bool, replace: bool = False) -> None:
    """Write to a new file (0600; over an existing one only with ``replace``: then the new
    content lands whole, by rename, and the file is 0600 again) or to standard output."""
    if out is None:
        if binary and sys.stdout.isatty():
            raise UsageError(
                "refusing to write binary output to a terminal",
                hint="Use --armor, or --output FILE, or redirect standard output.",
            )
        sys.stdout.buffer.write(data)
        sys.stdout.buffer.flush()
        return
    if replace and out.exists():
        if out.is_dir():
            raise InvalidInput(f"{out} is a folder", hint="Name a file.")
        part = out.with_name(f".{out.name}.pk-{os.getpid()}")
        write_output(data, part, binary=binary)
        os.replace(part, out)
        return
    try:
        fd = os.open(out, os.O_CREAT | os.O_EXCL | os.O_WRONLY, 0o600)
    except FileExistsError:
        raise InvalidInput(
            f"{out} already exists", hint="Choose a new output file, or pass --force."
        ) from None
    except OSError as exc:
        raise InvalidInput(f"cannot create {out}: {exc.strerror}") from None
    with os.fdopen(fd, "wb") as f:
        f.write(data)


def emit(s: Settings, human: str, doc: dict[str, Any]) -> None:
    """Print the result of a command in the chosen format.

    Each command escapes the fields another node chose (:mod:`polykey.cli.safe_text`); this
    escapes what is left of the controls once more, keeping the lines and tabs of the output.
    JSON escapes every control by construction (``ensure_ascii``)."""
    if s.json:
        click.echo(json.dumps(doc, indent=None, sort_keys=True))
    elif human:
        from polykey.cli.safe_text import shown

        click.echo(shown(human, multiline=True))


def table(rows: list[tuple[str, str]]) -> str:
    width = max(len(k) for k, _ in rows)
    return "\n".join(f"{k.ljust(width)}  {v}" for k, v in rows)


def _root_options() -> dict[str, Any]:
    """--node, --password-file and --format given before the command (`pk --node X node info`)."""
    ctx = click.get_current_context(silent=True)
    if ctx is None:
        return {}
    found: dict[str, Any] = ctx.find_root().meta.get("pk.root", {})
    return found


def pass_settings(f: F) -> F:
    """Collect the common options into a :class:`Settings` passed as ``s``."""

    @functools.wraps(f)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        root = _root_options()
        node = kwargs.pop("node", None) or root.get("node")
        password_file = kwargs.pop("password_file", None) or root.get("password_file")
        output = kwargs.pop("output_format", "human")
        if output == "human" and root.get("output_format"):
            output = root["output_format"]
        s = Settings(
            node=Path(node) if node is not None else None,
            password_file=Path(password_file) if password_file is not None else None,
            format=output,
        )
        return f(s, *args, **kwargs)

    return wrapper  # type: ignore[return-value]


def split_address(text: str, *, need_path: bool = True) -> tuple[str, str]:
    """VAULT:PATH -> (vault, path); VAULT alone is allowed where a directory may be the root."""
    vault, sep, path = text.partition(":")
    if not vault or (need_path and (not sep or not path)):
        raise UsageError(
            f"expected VAULT:PATH, got {text[:80]!r}",
            hint="Name a secret as VAULT:PATH, for example work:db/password.",
        )
    return vault, path
