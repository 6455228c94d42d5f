"""The soak's final table (rich when it is installed, plain text otherwise) and summary line."""

from __future__ import annotations

from collections.abc import Sequence

from bench.soak.core import Stats

COLUMNS = (
    ("runs", "runs"),
    ("kills", "kills"),
    ("acked", "acked writes"),
    ("verified", "verified"),
    ("lost", "lost"),
    ("torn", "half states"),
    ("unopenable", "unopenable"),
    ("check_failures", "check fails"),
    ("diverged", "diverged"),
    ("errors", "errors"),
    ("seconds", "min"),
)


BAD = ("lost", "torn", "unopenable", "check_failures", "diverged", "errors")


def _cell(st: Stats, field: str) -> str:
    value = getattr(st, field)
    return f"{value / 60:.1f}" if field == "seconds" else str(value)


def total(rows: Sequence[tuple[str, Stats]]) -> Stats:
    out = Stats()
    for _, st in rows:
        for field, _ in COLUMNS:
            setattr(out, field, getattr(out, field) + getattr(st, field))
    return out


def table(rows: Sequence[tuple[str, Stats]], title: str) -> str:
    everything = [*rows, ("total", total(rows))]
    head = ["scenario", *(label for _, label in COLUMNS)]
    body = [[name, *(_cell(st, f) for f, _ in COLUMNS)] for name, st in everything]
    try:
        from rich.console import Console
        from rich.table import Table
    except ImportError:
        widths = [max(len(r[i]) for r in [head, *body]) for i in range(len(head))]
        lines = [
            title,
            "  ".join(
                h.rjust(w) if i else h.ljust(w)
                for i, (h, w) in enumerate(zip(head, widths, strict=True))
            ),
        ]
        lines.append("  ".join("-" * w for w in widths))
        for r in body:
            lines.append(
                "  ".join(
                    c.rjust(w) if i else c.ljust(w)
                    for i, (c, w) in enumerate(zip(r, widths, strict=True))
                )
            )
        return "\n".join(lines)
    tab = Table(title=title, show_lines=False)
    for i, h in enumerate(head):
        tab.add_column(h, justify="left" if i == 0 else "right")
    for n, r in enumerate(body):
        bad = any(r[1 + i] != "0" for i, (f, _) in enumerate(COLUMNS) if f in BAD)
        style = "bold red" if bad else ("bold" if n == len(body) - 1 else None)
        tab.add_row(*r, style=style, end_section=n == len(body) - 2)
    console = Console(width=140, record=True, force_terminal=False, color_system=None)
    with console.capture() as cap:
        console.print(tab)
    return cap.get().rstrip()


def summary(rows: Sequence[tuple[str, Stats]], minutes: float, seed: int) -> str:
    t = total(rows)
    return (
        f"soak: {minutes:.1f} min, seed {seed}: {t.kills} kills, {t.runs} runs, "
        f"{t.acked} acknowledged writes, {t.verified} verified, {t.lost} lost writes, "
        f"{t.unopenable} unopenable files, {t.torn} half states, "
        f"{t.check_failures} node-check failures, {t.diverged} diverged, {t.errors} errors"
    )
