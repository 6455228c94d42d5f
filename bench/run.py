"""Polykey benchmarks: one command, one table. Run with `scripts/bench [--quick] [SECTION...]`.

Times on shared machines are noisy: every figure is a median of repeated runs, and comparisons
with peers (pass) are measured side by side in the same run.
"""

from __future__ import annotations

import argparse

from bench import (
    agent,
    audit,
    child,
    completion,
    dht,
    flat,
    health,
    interop,
    lan,
    large,
    node,
    own,
    relay,
    scale,
    sharing,
    trust,
    vaults,
)
from bench.common import Row

SECTIONS = {
    "node": node.section,
    "vaults": vaults.section,
    "flat": flat.section,
    "agent": agent.section,
    "sharing": sharing.section,
    "own": own.section,
    "large": large.section,
    "interop": interop.section,
    "completion": completion.section,
    "trust": trust.section,
    "health": health.section,
    "audit": audit.section,
    "child": child.section,
    "dht": dht.section,
    "lan": lan.section,
    "relay": relay.section,
    "scale": scale.section,
}


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--quick", action="store_true", help="fewer repetitions")
    parser.add_argument("sections", nargs="*", help=f"any of {', '.join(SECTIONS)} (default: all)")
    opts = parser.parse_args()
    unknown = [s for s in opts.sections if s not in SECTIONS]
    if unknown:
        parser.error(f"unknown section(s): {', '.join(unknown)}")
    rows: list[Row] = []
    for name in opts.sections or SECTIONS:
        rows.append((f"[{name}]", "", ""))
        rows.extend(SECTIONS[name](opts.quick))
    w1 = max(len(r[0]) for r in rows)
    w2 = max(len(r[1]) for r in rows)
    print(f"{'measure'.ljust(w1)}  {'median'.rjust(w2)}  target")
    print(f"{'-' * w1}  {'-' * w2}  ------")
    for name, value, target in rows:
        print(f"{name.ljust(w1)}  {value.rjust(w2)}  {target}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
