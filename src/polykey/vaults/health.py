"""`pk health`: weak, reused, old and breached passwords, and conflict copies left unresolved,
found offline in the vaults of one node (docs/spec/health.md).

Which secrets are passwords (``kind_of``): an entry's ``password`` file, and any secret outside
an entry whose value is one short line of text that does not look like something else (a key,
a URI, a name). An entry's other files (username, url, notes, ...) are not checked at all.

- weak: zxcvbn's estimate in bits, in KeePassXC's bands (vaults/strength.py), with its penalty
  for reuse; bad, poor and weak are findings.
- reused: passwords with the same value, grouped by HMAC-SHA256 under a key derived from the
  node's root key for this purpose alone (``reuse_key``); never a plain digest, never a value.
- old: the last commit that changed the secret (as `pk secrets stat` tells it) is older than
  ``max_age_days``; every checked secret (passwords and the secrets outside entries).
- breached: the password's SHA-1 is in the breach list (vaults/breaches.py, or another
  ``Breaches``, such as the online check).
- conflict: a conflict copy a merge left (vaults/merge.py) and nobody resolved; it is not
  checked otherwise.
- exposed: a (vault, path) the caller names as seen by a node whose access ended (the exposure
  reports' "needs rotation": vaults/exposure.py), still at that path.
"""

from __future__ import annotations

import hashlib
import time
from collections.abc import Callable, Collection, Iterator
from dataclasses import dataclass, field
from typing import Protocol

from polykey.crypto.kdf import hkdf, hmac_sha256
from polykey.values import as_value
from polykey.vaults import strength
from polykey.vaults.history import diff_trees
from polykey.vaults.merge import parse_copy
from polykey.vaults.paths import RESERVED_PREFIX
from polykey.vaults.registry import Vaults
from polykey.vaults.search import ENTRY_MARKERS
from polykey.vaults.vault import Vault

REUSE_INFO = b"polykey/v1 health reuse"
"""The HKDF label of the key that groups equal passwords (docs/spec/health.md)."""

DEFAULT_MAX_AGE_DAYS = 365
DAY = 86400
MAX_PASSWORD_BYTES = 128  # a longer value is not a password (zxcvbn reads 72 characters)
KINDS = ("breached", "exposed", "weak", "reused", "old", "conflict")
"""The kinds of findings, in the order a secret's are listed."""

_WORDS = "user username login email mail url uri link host hostname port name title notes note"
NOT_SECRET_WORDS = frozenset(f"{_WORDS} region endpoint id domain".split(" "))
"""A secret whose name's last word (split at ``_ - . /`` and spaces) is one of these names
something that is not a password (DB_HOST, AWS_ACCESS_KEY_ID, api-url)."""

NOT_PASSWORD_STARTS = ("-----BEGIN", "otpauth://", "ssh-", "ecdsa-sha2-", "sk-ssh-", "age1")
Progress = Callable[[int, int], None]
"""Told (secrets done, secrets in all) as the check goes."""


class Breaches(Protocol):
    def breached(self, sha1: bytes) -> bool: ...


@dataclass(frozen=True)
class Finding:
    vault: str
    path: str
    kind: str  # one of KINDS
    detail: str  # one line, never a value
    band: str | None = None  # weak: KeePassXC's band
    bits: float | None = None  # weak: zxcvbn's estimate
    days: int | None = None  # old: days since the last change
    same_as: tuple[str, ...] = ()  # reused: the other secrets (VAULT:PATH) of the value
    copy_of: str | None = None  # conflict: the path whose value it differs from


@dataclass(frozen=True)
class Report:
    vaults: tuple[str, ...]
    secrets: int  # secrets checked (for age)
    passwords: int  # of them, passwords (strength, reuse, breaches)
    breaches: str  # "offline", "online" or "not checked"
    max_age_days: int
    findings: tuple[Finding, ...] = field(default=())


@dataclass(frozen=True)
class _Secret:
    vault: str
    path: str
    password: bool
    blob: bytes


def reuse_key(root_seed: bytes) -> bytes:
    """The key that groups equal passwords: HKDF-SHA256 of the root key's seed, REUSE_INFO."""
    return hkdf(root_seed, REUSE_INFO)


def kind_of(path: str, in_entry: bool, value: bytes | None = None) -> str | None:
    """How the secret at ``path`` is checked: as a "password", as a "secret" (its age only), or
    not at all (None). ``in_entry``: its folder is an entry's. With ``value`` None the name
    alone decides (a password, unless its value turns out not to be one)."""
    name = path.rsplit("/", 1)[-1]
    if in_entry:
        return "password" if name == "password" and _one_line(value) else None
    words = name.replace("-", "_").replace(".", "_").replace(" ", "_").lower().split("_")
    if words[-1] in NOT_SECRET_WORDS:
        return None
    return "password" if _one_line(value) else "secret"


def _one_line(value: bytes | None) -> bool:
    """One short line of text that does not start as a key, a URI or a public key does."""
    if value is None:
        return True
    value = as_value(value)
    if not 0 < len(value) <= MAX_PASSWORD_BYTES:
        return False
    try:
        text = value.decode("utf-8")
    except UnicodeDecodeError:
        return False
    if not text.isprintable() or "://" in text:  # no control characters, no line breaks
        return False
    return not text.startswith(NOT_PASSWORD_STARTS)


def check(
    vaults: Vaults,
    names: Collection[str],
    key: bytes,
    *,
    breaches: Breaches | None = None,
    breaches_kind: str = "offline",
    max_age_days: int = DEFAULT_MAX_AGE_DAYS,
    exposed: Collection[tuple[str, str]] = (),
    now: float | None = None,
    progress: Progress | None = None,
) -> Report:
    """Check the vaults ``names`` (every vault when empty); ``key``: ``reuse_key``'s."""
    now = time.time() if now is None else now
    names = list(names) or [i.name for i in vaults.all()]
    findings: list[Finding] = []
    secrets: list[_Secret] = []
    held: set[tuple[str, str]] = set()
    for name in names:
        vault = vaults.open(name)
        found, copies = _secrets_of(vault, held)
        secrets.extend(found)
        findings.extend(copies)
        findings.extend(_old(vault, found, now, max_age_days))
    findings.extend(
        Finding(v, p, "exposed", "needs rotation: a node whose access ended received this value")
        for v, p in sorted(set(exposed))
        if (v, p) in held
    )
    scored = _passwords(vaults, [s for s in secrets if s.password], key, breaches, progress)
    findings.extend(scored.findings)
    order = {k: n for n, k in enumerate(KINDS)}
    findings.sort(key=lambda f: (f.vault, f.path, order[f.kind]))
    return Report(
        vaults=tuple(names),
        secrets=len(secrets),
        passwords=scored.count,
        breaches=breaches_kind if breaches is not None else "not checked",
        max_age_days=max_age_days,
        findings=tuple(findings),
    )


def _secrets_of(vault: Vault, held: set[tuple[str, str]]) -> tuple[list[_Secret], list[Finding]]:
    """The secrets of ``vault`` to check (by name; a value may still turn a "password" down
    later), and its conflict copies as findings; every secret's (vault, path) into ``held``."""
    if vault.head() is None:
        return [], []
    entries = [
        e
        for e in vault.ls("", recursive=True)
        if e.kind == "secret"
        and e.blob
        and not e.path.startswith(RESERVED_PREFIX)
        and f"/{RESERVED_PREFIX}" not in e.path
    ]
    folders = {e.path.rpartition("/")[0] for e in entries if _name(e.path) in ENTRY_MARKERS}
    found: list[_Secret] = []
    copies: list[Finding] = []
    for e in entries:
        assert e.blob is not None
        held.add((vault.name, e.path))
        copy = parse_copy(e.path)
        if copy is not None:
            detail = f"an unresolved conflict copy of {copy.path} (made by {copy.node}…)"
            copies.append(Finding(vault.name, e.path, "conflict", detail, copy_of=copy.path))
            continue
        kind = kind_of(e.path, e.path.rpartition("/")[0] in folders)
        if kind is not None:
            found.append(_Secret(vault.name, e.path, kind == "password", e.blob))
    return found, copies


def _name(path: str) -> str:
    return path.rpartition("/")[2]


def _old(vault: Vault, found: list[_Secret], now: float, max_age_days: int) -> list[Finding]:
    """The secrets of ``found`` last changed more than ``max_age_days`` before ``now``: one walk
    of the history, newest first, each commit compared with each parent, until every secret's
    last change is known."""
    pending = {s.path for s in found}
    changed: dict[str, int] = {}
    objects = vault.objects()
    for commit in vault.walk():
        parents = [objects.get_commit(p).tree for p in commit.parents] or [None]
        for tree in parents:
            for change in diff_trees(objects, tree, commit.tree):
                if change.path in pending:
                    pending.discard(change.path)
                    changed[change.path] = commit.commit_time
        if not pending:
            break
    out = []
    for path, when in sorted(changed.items()):
        days = int((now - when) // DAY)
        if days > max_age_days:
            day = time.strftime("%Y-%m-%d", time.gmtime(when))
            detail = f"last changed {days} days ago ({day}); older than {max_age_days} days"
            out.append(Finding(vault.name, path, "old", detail, days=days))
    return out


@dataclass(frozen=True)
class _Scored:
    count: int  # passwords scored
    findings: list[Finding]


def _passwords(
    vaults: Vaults,
    passwords: list[_Secret],
    key: bytes,
    breaches: Breaches | None,
    progress: Progress | None,
) -> _Scored:
    """Strength, reuse and breaches of the passwords: each value read, keyed-hashed, and scored
    once however many secrets hold it."""
    groups: dict[bytes, list[_Secret]] = {}
    bits: dict[bytes, float] = {}
    breached: set[bytes] = set()
    opened: dict[str, Vault] = {}
    total = len(passwords)
    for done, s in enumerate(passwords, 1):
        vault = opened.get(s.vault) or opened.setdefault(s.vault, vaults.open(s.vault))
        raw = vault.read_blob(s.blob)
        if _one_line(raw):
            value = as_value(raw)
            tag = hmac_sha256(key, value)
            groups.setdefault(tag, []).append(s)
            if tag not in bits:
                bits[tag] = strength.bits(value.decode("utf-8"))
                sha1 = hashlib.sha1(value).digest()  # noqa: S324 (the breach list's format)
                if breaches is not None and breaches.breached(sha1):
                    breached.add(tag)
        if progress is not None:
            progress(done, total)
    findings = list(_judged(groups, bits, breached))
    return _Scored(sum(len(m) for m in groups.values()), findings)


def _judged(
    groups: dict[bytes, list[_Secret]], bits: dict[bytes, float], breached: set[bytes]
) -> Iterator[Finding]:
    for tag, members in groups.items():
        uses = len(members)
        score = strength.score(bits[tag], uses)
        band = strength.band(score)
        for s in members:
            if tag in breached:
                yield Finding(s.vault, s.path, "breached", "in the breach list; change it")
            if band in ("bad", "poor", "weak"):
                detail = f"{band}: about {bits[tag]:.0f} bits"
                if uses > 1:
                    detail += f", score {score:.0f} after the reuse penalty"
                rounded = round(bits[tag], 1)
                yield Finding(s.vault, s.path, "weak", detail, band=band, bits=rounded)
            if uses > 1:
                others = tuple(f"{o.vault}:{o.path}" for o in members if o is not s)
                more = f" and {len(others) - 3} more" if len(others) > 3 else ""
                detail = f"the same value as {', '.join(others[:3])}{more}"
                yield Finding(s.vault, s.path, "reused", detail, same_as=others)
