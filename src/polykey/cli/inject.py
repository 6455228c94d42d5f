"""Secrets into programs: `pk secrets env`, `pk run`, `pk read`, `pk inject`.

Secrets reach a program through its environment (exec, so never through argv or a file) or a
template the user asks to render. `pk run --mask` relays the program's output with every secret
value replaced by ``<concealed by pk>``.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from polykey.cli.common import (
    Settings,
    emit,
    node_options,
    pass_settings,
    password_options,
    split_address,
)
from polykey.cli.envfmt import FORMATS, render, valid_name
from polykey.errors import InvalidInput, UsageError

ORIGINAL = ".pass"  # interop/layout.py: an imported pass entry's file, not a field
URI = re.compile(r"pk://(?P<vault>[^/\s]+)/(?P<path>[^\s}]+)")
PLACEHOLDER = re.compile(r"\{\{\s*(pk://[^\s}]+)\s*\}\}")
MASK = b"<concealed by pk>"
F = TypeVar("F", bound=Callable[..., Any])


def parse_uri(uri: str) -> tuple[str, str]:
    """(vault, path) of pk://VAULT/PATH; a space or other character is written %XX there
    (pk://team/db%20password names the secret "db password")."""
    from urllib.parse import unquote

    match = URI.fullmatch(uri.strip())
    if match is None:
        raise InvalidInput(
            f"not a secret reference: {uri[:80]!r}",
            hint="Write it as pk://VAULT/PATH, with a space as %20.",
        )
    try:
        vault = unquote(match["vault"], errors="strict")
        path = unquote(match["path"], errors="strict")
    except UnicodeDecodeError:
        raise InvalidInput(
            f"not a secret reference: {uri[:80]!r} (a %XX escape is not UTF-8)",
            hint="Write a space as %20: escapes are the UTF-8 bytes of a character.",
        ) from None
    return vault, path


def fetch(s: Settings, refs: list[tuple[str, str]]) -> list[bytes]:
    """The secrets ``refs`` name, as values: without a final newline (polykey.values)."""
    from polykey.values import as_value

    if not refs:
        return []
    result = s.call("secrets.cat", {"items": [list(r) for r in refs]})
    return [as_value(item["data"]) for item in result["secrets"]]


def _policy_option(flag: str, what: str) -> Callable[[F], F]:
    """--invalid / --duplicate: error (the default), warn and skip, or skip quietly."""
    return click.option(
        flag,
        type=click.Choice(["error", "warn", "skip"]),
        default="error",
        show_default=True,
        help=what,
    )


def _policy(name: str, problem: str, policy: str) -> bool:
    """Apply --invalid/--duplicate: True to keep the variable."""
    if policy == "error":
        raise InvalidInput(problem, hint=f"Use --{name} warn or --{name} skip to go on.")
    if policy == "warn":  # the problem names a secret, whose path may come from another node
        from polykey.cli.safe_text import shown

        sys.stderr.write(f"pk: warning: {shown(problem)}; skipped\n")
    return False


@click.command("env", context_settings={"ignore_unknown_options": True})
@password_options
@click.argument(
    "args",
    metavar="VAULT[:PATH][=NAME]... [-- CMD ARGS...]",
    nargs=-1,
    required=True,
    type=click.UNPROCESSED,
)
@click.option(
    "--format",
    "env_format",
    type=click.Choice(FORMATS),
    default="unix",
    show_default=True,
    help="How to print the variables (without a command).",
)
@_policy_option("--invalid", "A secret whose name is not a valid variable name.")
@_policy_option("--duplicate", "Two secrets that give the same variable name.")
@pass_settings
def env(
    s: Settings,
    args: tuple[str, ...],
    env_format: str,
    invalid: str,
    duplicate: str,
) -> None:
    """Secrets as environment variables: printed, or given to a program after `--`.

    Each VAULT[:PATH] names a secret or a directory (read recursively); a variable is named after
    the secret's file name, or NAME after '='. Values lose one final newline; the .pass file of
    an imported pass entry is no field and is left out.
    """
    from polykey.values import as_value

    specs, command = _split_command(args)
    if not specs:
        raise UsageError("name at least one VAULT[:PATH]")
    items: list[list[str]] = []
    renames: dict[int, str] = {}
    for i, spec in enumerate(specs):
        address, _, rename = spec.partition("=")
        vault, path = split_address(address, need_path=False)
        items.append([vault, path])
        if rename:
            renames[i] = rename
    found = s.call("secrets.env", {"items": items})["secrets"]
    variables: list[tuple[str, bytes]] = []
    seen: set[str] = set()
    for vault, path, rel, stored in found:
        index = next(i for i, it in enumerate(items) if it[0] == vault and _under(path, it[1]))
        if rel.rsplit("/", 1)[-1] == ORIGINAL and path.strip("/") != items[index][1].strip("/"):
            continue  # an entry's copy of its pass file (docs/spec/entries.md)
        value = as_value(stored)
        name = renames.get(index, rel.rsplit("/", 1)[-1])
        if not valid_name(name) and not _policy(
            "invalid", f"{vault}:{path} gives no valid variable name", invalid
        ):
            continue
        if name in seen and not _policy(
            "duplicate", f"{name} is given twice ({vault}:{path})", duplicate
        ):
            continue
        seen.add(name)
        variables.append((name, value))
    if command:
        environ = os.environb.copy()
        for name, value in variables:
            if b"\x00" in value:
                raise InvalidInput(f"{name} holds a NUL byte, which no environment can carry")
            environ[name.encode()] = value
        _exec(list(command), environ)
    sys.stdout.write(render(variables, env_format))


def _under(path: str, base: str) -> bool:
    base = base.strip("/")
    return not base or path == base or path.startswith(base + "/")


def _split_command(args: tuple[str, ...]) -> tuple[tuple[str, ...], tuple[str, ...]]:
    """click drops the `--` that separates the secrets from the command: find it again."""
    from polykey.cli import main

    raw = main.ARGS
    if "--" in raw:
        after = raw[raw.index("--") + 1 :]
        if after and list(args[-len(after) :]) == after:
            return args[: -len(after)], tuple(after)
    return args, ()


def _exec(command: list[str], environ: dict[bytes, bytes]) -> None:
    sys.stdout.flush()
    try:
        os.execvpe(command[0], command, environ)  # noqa: S606 - the user's own program
    except FileNotFoundError:
        raise InvalidInput(f"command not found: {command[0]}") from None
    except PermissionError:
        raise InvalidInput(f"command not executable: {command[0]}") from None


@click.command(context_settings={"ignore_unknown_options": True})
@password_options
@click.option(
    "--env-file",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="Also load variables from this .env file (its pk:// values are resolved too).",
)
@click.option("--mask", is_flag=True, help="Conceal secret values in the program's output.")
@click.argument("command", nargs=-1, required=True, type=click.UNPROCESSED)
@pass_settings
def run(s: Settings, env_file: Path | None, mask: bool, command: tuple[str, ...]) -> None:
    """Run a program with every pk://VAULT/PATH value in its environment resolved."""
    environ = dict(os.environ)
    if env_file is not None:
        environ.update(_read_env_file(env_file))
    names = [n for n, v in environ.items() if v.startswith("pk://")]
    refs = [parse_uri(environ[n]) for n in names]
    values = fetch(s, refs)
    benv = {k.encode(): v.encode() for k, v in environ.items()}
    for name, value in zip(names, values, strict=True):
        if b"\x00" in value:
            raise InvalidInput(f"{name} holds a NUL byte, which no environment can carry")
        benv[name.encode()] = value
    if not mask:
        _exec(list(command), benv)
    code = run_masked(list(command), benv, [v for v in values if v])
    sys.exit(code)


def _read_env_file(path: Path) -> dict[str, str]:
    """The variables of a .env file, read as `pk import dotenv` reads it (interop/dotenv.py)."""
    from polykey.interop import dotenv

    hint = "Each line is NAME=VALUE, a # comment or blank (docs/spec/dotenv.md)."
    try:
        data = path.read_bytes()
    except OSError as exc:
        raise InvalidInput(f"cannot read {path}: {exc.strerror or type(exc).__name__}") from None
    try:
        variables, bad = dotenv.parse(data)
    except dotenv.NotText as exc:
        raise InvalidInput(f"{path} {exc}", hint="Save it as UTF-8 text.") from None
    if bad:  # the line's number and what is wrong, never its text: it may be a secret
        raise InvalidInput(f"{path}:{bad[0].line}: {bad[0].why}", hint=hint)
    return variables


class Masker:
    """Replaces secret values in a byte stream, even across chunk boundaries."""

    def __init__(self, secrets: list[bytes]) -> None:
        self.secrets = sorted(set(secrets), key=len, reverse=True)
        self.keep = max((len(x) for x in self.secrets), default=1) - 1
        self.pending = b""

    def feed(self, chunk: bytes) -> bytes:
        data = self._mask(self.pending + chunk)
        if self.keep == 0:
            self.pending = b""
            return data
        # hold back a tail that could be the start of a secret cut by the chunk boundary
        cut = max(len(data) - self.keep, 0)
        self.pending = data[cut:]
        return data[:cut]

    def flush(self) -> bytes:
        data, self.pending = self.pending, b""
        return data

    def _mask(self, data: bytes) -> bytes:
        for secret in self.secrets:
            data = data.replace(secret, MASK)
        return data


def run_masked(command: list[str], environ: dict[bytes, bytes], secrets: list[bytes]) -> int:
    import selectors
    import signal

    try:
        proc = subprocess.Popen(
            command, env=environ, stdout=subprocess.PIPE, stderr=subprocess.PIPE, stdin=None
        )
    except FileNotFoundError:
        raise InvalidInput(f"command not found: {command[0]}") from None
    for sig in (signal.SIGINT, signal.SIGTERM, signal.SIGHUP):
        signal.signal(sig, lambda n, _f: proc.send_signal(n))
    assert proc.stdout is not None and proc.stderr is not None
    streams = {
        proc.stdout: (Masker(secrets), sys.stdout.buffer),
        proc.stderr: (Masker(secrets), sys.stderr.buffer),
    }
    selector = selectors.DefaultSelector()
    for stream in streams:
        selector.register(stream, selectors.EVENT_READ)
    open_streams = len(streams)
    while open_streams:
        for key, _ in selector.select():
            masker, out = streams[key.fileobj]  # type: ignore[index]
            chunk = os.read(key.fd, 65536)
            if not chunk:
                out.write(masker.flush())
                out.flush()
                selector.unregister(key.fileobj)
                open_streams -= 1
                continue
            out.write(masker.feed(chunk))
            out.flush()
    return proc.wait() if proc.returncode is None else proc.returncode


@click.command()
@node_options
@click.argument("uri", metavar="pk://VAULT/PATH")
@pass_settings
def read(s: Settings, uri: str) -> None:
    """Print one secret, named by its reference."""
    (value,) = fetch(s, [parse_uri(uri)])
    if s.json:
        emit(s, "", {"uri": uri, "value": value.decode("utf-8", "replace")})
        return
    sys.stdout.buffer.write(value + (b"\n" if sys.stdout.isatty() else b""))
    sys.stdout.flush()


@click.command()
@node_options
@click.option(
    "-i",
    "--in-file",
    "template",
    type=click.Path(exists=True, dir_okay=False, path_type=Path),
    help="The template (default: standard input).",
)
@click.option(
    "-o",
    "--out-file",
    "out",
    type=click.Path(dir_okay=False, path_type=Path),
    help="Write to this new file, mode 0600 (it holds secrets in plaintext).",
)
@click.option("-f", "--force", is_flag=True, help="Replace the --out-file if it exists.")
@pass_settings
def inject(s: Settings, template: Path | None, out: Path | None, force: bool) -> None:
    """Render a template, replacing each {{ pk://VAULT/PATH }} with the secret."""
    from polykey.cli.common import write_output

    text = template.read_bytes() if template else sys.stdin.buffer.read()
    try:
        body = text.decode("utf-8")
    except UnicodeDecodeError:
        raise InvalidInput("the template is not UTF-8 text") from None
    uris = list(dict.fromkeys(m.group(1) for m in PLACEHOLDER.finditer(body)))
    values = dict(zip(uris, fetch(s, [parse_uri(u) for u in uris]), strict=True))
    rendered = PLACEHOLDER.sub(lambda m: values[m.group(1)].decode("utf-8", "replace"), body)
    if out is not None and out.exists() and not force:
        raise UsageError(f"{out} exists", hint="Choose a new output file, or pass --force.")
    write_output(rendered.encode(), out, binary=False, replace=force)
