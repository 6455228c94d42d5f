"""`pk health`: weak, reused, old, breached and exposed secrets, and conflict copies left
unresolved (the domain is vaults/health.py; the breach file vaults/breaches.py)."""

from __future__ import annotations

from collections.abc import Callable
from contextvars import ContextVar
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any

from polykey.agent.methods import METHODS

if TYPE_CHECKING:
    from polykey.node import Node

PROGRESS: ContextVar[Callable[[int, int], None] | None] = ContextVar("PROGRESS", default=None)
"""Told (done, total) as the passwords are checked, when the CLI runs the method in its own
process (an agent's client sees no progress: its protocol has one answer per request)."""


@dataclass(frozen=True)
class VaultsHealth:
    names: list[str] = field(default_factory=list)  # none: every vault
    max_age_days: int = 365
    breaches: str | None = None  # the breach file; None: no breach check
    exposed: list[tuple[str, str]] = field(default_factory=list)  # (vault, path) to rotate


@METHODS.method("vaults.health")
def vaults_health(node: Node, p: VaultsHealth) -> dict[str, Any]:
    from polykey.errors import InvalidInput
    from polykey.vaults import health

    if p.max_age_days < 0:
        raise InvalidInput("--max-age must be 0 or more days")
    key = health.reuse_key(node.key.signing.seed())
    exposed = set(p.exposed) | exposed_secrets(node)
    breaches = None
    if p.breaches is not None:
        from polykey.vaults.breaches import BreachFile

        breaches = BreachFile(Path(p.breaches))
    try:
        report = health.check(
            node.vaults,
            p.names,
            key,
            breaches=breaches,
            max_age_days=p.max_age_days,
            exposed=exposed,
            progress=PROGRESS.get(),
        )
    finally:
        if breaches is not None:
            breaches.close()
    doc = asdict(report)
    doc["vaults"] = list(report.vaults)
    return doc


def exposed_secrets(node: Node) -> set[tuple[str, str]]:
    """The (vault, path) of the secrets whose value a node received before its access ended,
    still current (vaults/exposure.py: the kept reports' "needs rotation")."""
    from polykey.vaults.exposure import kept, still_current

    out: set[tuple[str, str]] = set()
    for report in kept(node.vaults):
        for vault, paths in still_current(node.vaults, report).items():
            out.update((vault, path) for path in paths)
    return out
