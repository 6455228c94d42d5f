"""`pk health [VAULT...]` and `pk health import-breaches FILE` (docs/spec/health.md)."""

from __future__ import annotations

import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings
from polykey.cli.safe_text import shown
from polykey.errors import UsageError

EXIT_FINDINGS = 7
"""The exit status when the check found something (docs/exit-codes.md)."""
BAR_FROM = 200  # passwords; fewer finish before a bar is worth drawing
BAR_EVERY_S = 0.1


@click.command()
@node_options
@click.argument("words", nargs=-1, metavar="[VAULT...] | import-breaches FILE")
@click.option(
    "--max-age",
    type=click.IntRange(0),
    default=365,
    show_default=True,
    metavar="DAYS",
    help="A secret last changed longer ago than this is old.",
)
@click.option(
    "--breaches",
    "breaches_path",
    type=click.Path(dir_okay=False, path_type=Path),
    help="The breach file (made by `pk health import-breaches`). Else breaches.pkb beside "
    "the node file, when there is one.",
)
@pass_settings
def health(s: Settings, words: tuple[str, ...], max_age: int, breaches_path: Path | None) -> None:
    """Find weak, reused, old and breached passwords, and conflict copies left unresolved.

    Offline: strength is zxcvbn's estimate in KeePassXC's bands, reuse is found by a keyed
    hash inside the node, age from each secret's history, breaches from Have I Been Pwned's
    list once imported with `pk health import-breaches FILE` (the SHA-1 list, sorted or not).
    One line per finding, never a value. Exits 0 when nothing is found, 7 when something is.

    An entry's `password` and a secret that is one short line (not named like a user, host or
    URL) are passwords; keys, certificates, .env files and long values are checked for age
    only; an entry's other fields are not checked.
    """
    if words[:1] == ("import-breaches",):
        if len(words) != 2:
            raise UsageError("give import-breaches FILE")
        _import(s, Path(words[1]), breaches_path)
        return
    breach_file: Path | None = breaches_path or s.node_path().parent / _file_name()
    if breaches_path is None and breach_file is not None and not breach_file.exists():
        breach_file = None
    params: dict[str, Any] = {"names": list(words), "max_age_days": max_age}
    if breach_file is not None:
        params["breaches"] = str(breach_file.absolute())
    r = _call(s, params)
    emit(s, _human(r, breach_file is not None), r)
    if r["findings"]:
        sys.exit(EXIT_FINDINGS)


def _file_name() -> str:
    from polykey.vaults.breaches import FILE_NAME

    return FILE_NAME


def _call(s: Settings, params: dict[str, Any]) -> dict[str, Any]:
    """The method in the agent when one runs; else here, with a progress bar on a terminal."""
    client = s.agent()
    if client is not None:
        client.close()
        return s.call("vaults.health", params)
    from polykey.agent import methods
    from polykey.agent.methods import health as room

    with s.open_node() as node, _bar() as step:
        token = room.PROGRESS.set(step)
        try:
            return methods.call(node, "vaults.health", params)
        finally:
            room.PROGRESS.reset(token)


@contextmanager
def _bar() -> Iterator[Any]:
    """A progress callback drawing on standard error when it is a terminal, else None."""
    if not sys.stderr.isatty():
        yield None
        return
    last = [0.0]
    drawn = [False]

    def step(done: int, total: int) -> None:
        now = time.monotonic()
        if total < BAR_FROM or (now - last[0] < BAR_EVERY_S and done < total):
            return
        last[0] = now
        filled = 30 * done // total
        sys.stderr.write(
            f"\rChecking passwords [{'#' * filled}{'.' * (30 - filled)}] {done}/{total}"
        )
        sys.stderr.flush()
        drawn[0] = True

    try:
        yield step
    finally:
        if drawn[0]:
            sys.stderr.write("\r\x1b[K")
            sys.stderr.flush()


def _human(r: dict[str, Any], breaches: bool) -> str:
    rows = [(f"{f['vault']}:{f['path']}", f["kind"], f["detail"]) for f in r["findings"]]
    lines = []
    if rows:
        w1 = max(len(a) for a, _, _ in rows)
        w2 = max(len(b) for _, b, _ in rows)
        lines = [f"{a.ljust(w1)}  {b.ljust(w2)}  {c}" for a, b, c in rows]
    counts: dict[str, int] = {}
    for f in r["findings"]:
        counts[f["kind"]] = counts.get(f["kind"], 0) + 1
    found = ", ".join(f"{n} {kind}" for kind, n in counts.items()) or "nothing"
    vaults = len(r["vaults"])
    lines.append(
        f"Found {found} in {vaults} vault{'s' * (vaults != 1)}: {r['secrets']} secrets checked, "
        f"{r['passwords']} of them passwords."
    )
    if not breaches:
        lines.append(
            "Breached passwords were not checked: import Have I Been Pwned's list once with "
            "`pk health import-breaches FILE`."
        )
    return "\n".join(shown(line) for line in lines)


def _import(s: Settings, source: Path, target: Path | None) -> None:
    from polykey.vaults.breaches import BreachListUnreadable, convert

    target = target or s.node_path().parent / _file_name()
    try:
        f = source.open("rb")
    except OSError as exc:
        raise BreachListUnreadable(f"{source} ({exc.strerror})") from None
    started = time.monotonic()
    with f:
        done = convert(f, target)
    took = time.monotonic() - started
    human = (
        f"Wrote {shown(done.path)}: {done.records} hashes from {done.lines} lines "
        f"({done.width} bytes each) in {took:.1f} s."
    )
    emit(
        s,
        human,
        {
            "path": done.path,
            "lines": done.lines,
            "records": done.records,
            "width": done.width,
            "runs": done.runs,
        },
    )
