"""The soak, briefly: `scripts/soak` with a few runs of some scenarios, real processes killed -9.

The full soak (`scripts/soak --minutes 25`) runs every scenario in every kill mode for a long
time; here one mode of each kind of scenario runs a handful of times, so CI sees the soak itself
work (kills land, acknowledged writes are read back, node files are checked) and stay clean.
"""

from __future__ import annotations

import os
import re
import shutil
import subprocess
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from bench.soak.core import Context

ROOT = Path(__file__).resolve().parents[2]
SOAK = ROOT / "scripts" / "soak"

# One kill mode of each kind of scenario (`scripts/soak --list` names them all).
KILLS = (
    "write/kill-agent",
    "vaults/agent-cli",
    "mv-rm/direct",
    "import/kill-agent",
    "agent-requests",
    "clone/server-agent",
    "pull/client-agent",
    "push/client-cli",
    "merge/client-agent",
    "backup/direct",
)


def soak(*args: str, timeout: float) -> tuple[int, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
    done = subprocess.run(
        [str(SOAK), "--seed", "20261204", *args],
        cwd=ROOT,
        env=env,
        capture_output=True,
        text=True,
        timeout=timeout,
        check=False,
    )
    return done.returncode, done.stdout + done.stderr


def summary(out: str) -> dict[str, int]:
    line = next(ln for ln in out.splitlines() if ln.startswith("soak: ") and "lost writes" in ln)
    return {name: int(n) for n, name in re.findall(r"(\d+) ([a-z -]+?)(?:,|$)", line)}


def test_kills_across_writes_vault_commands_imports_agent_sharing_merges_backups() -> None:
    args = ["--only", "kills", "--runs", "2"]
    for name in KILLS:
        args += ["--scenario", name]
    code, out = soak(*args, timeout=240)
    assert code == 0, out
    assert " 0 lost writes, 0 unopenable files, 0 half states, 0 node-check failures" in out, out
    counts = summary(out)
    assert counts["kills"] >= len(KILLS) // 2, out
    assert counts["acknowledged writes"] == counts["verified"] > 0, out


@pytest.mark.skipif(
    os.geteuid() != 0 or shutil.which("ip") is None, reason="network namespaces need root and ip"
)
def test_three_hosts_under_faults_converge() -> None:
    code, out = soak("--only", "network", "--runs", "1", "--network-phase", "10", timeout=240)
    if "set-up failed: ip netns add" in out:
        pytest.skip("this machine does not allow network namespaces")
    assert code == 0, out
    assert " 0 lost writes, 0 unopenable files" in out, out
    assert " 0 diverged" in out, out
    assert summary(out)["verified"] > 0, out


def test_the_soak_notices_a_lost_write_and_an_unopenable_file(tmp_path: Path) -> None:
    """The checks themselves: a write taken away behind the soak's back is reported lost, and a
    node file whose header is damaged is reported unopenable."""
    import random

    from bench.soak.core import Context, Stats
    from bench.soak.scenarios.local import Writes

    stats = Stats()
    sc = Writes(Context(tmp_path, 1, random.Random(1), stats), "direct")
    sc.setup()
    sc.clock.spare = 1.0  # never kill: every write is acknowledged
    for sc.run_no in range(1, 4):
        sc.step(60)
    assert stats.acked == stats.verified == 3 and stats.lost == 0
    key = next(k for k, (last, _) in sc.ledger.items() if last is not None)
    assert sc.node.pk("secrets", "rm", key).acked
    sc.final()
    assert stats.lost >= 1, stats.incidents
    with open(sc.node.path, "r+b") as f:
        f.seek(100)
        f.write(b"\xff" * 64)
    sc.check_node(sc.node, " (damaged on purpose)", direct=True)
    assert stats.unopenable == 1, stats.incidents


def test_the_backup_judge_takes_an_older_history_and_nothing_else() -> None:
    """A backup's vault may be at the node's head or an older commit of the node's history;
    a commit the node never had, a history that is not the node's, or a vault the node lacks
    is a half state; only every vault at the head, with its name and tags, is complete."""
    from bench.soak.scenarios.own import Backups

    node = {"v1": ("a", ("t",), ["c3", "c2", "c1"]), "v2": ("b", (), ["d1"])}
    assert Backups.prefix(node, {}) == ""
    assert Backups.prefix(node, {"v1": ("a", (), ["c2", "c1"])}) == ""
    assert Backups.exact(node, {"v1": ("a", (), ["c2", "c1"])}) != ""
    assert Backups.prefix(node, {"v1": ("a", (), ["x9", "c1"])}) != ""
    assert Backups.prefix(node, {"v1": ("a", (), ["c2", "x1"])}) != ""
    assert Backups.prefix(node, {"v3": ("c", (), ["e1"])}) != ""
    assert Backups.exact(node, dict(node)) == ""
    assert Backups.exact(node, {**node, "v1": ("a", (), ["c3", "c2", "c1"])}) != ""


# --- the newer scenarios: kept in the full soak (too slow for the smoke); each judge's check ----


def _ctx(tmp_path: Path) -> Context:
    import random

    from bench.soak.core import Context, Stats

    return Context(tmp_path, 1, random.Random(1), Stats())


def test_the_audit_judge_notices_a_removed_record_and_a_record_of_a_write_not_asked(
    tmp_path: Path,
) -> None:
    from bench.soak.scenarios.audit import AuditedWrites

    from polykey.node import Node
    from polykey.vaults.audit import LOG, seq_key

    sc = AuditedWrites(_ctx(tmp_path), "agent-cli")
    try:
        sc.setup()
        sc.clock.spare = 1.0  # never killed: every write is acknowledged and recorded
        for sc.run_no in range(1, 3):
            sc.step(60)
        assert sc.stats.acked == sc.stats.verified == 2 and not sc.stats.bad, sc.stats.incidents
        some = next(iter(sc.secrets_now))
        sc.node.must("secrets", "cat", f"au:{some}")  # a record the soak's model did not ask
        done = sc.request("k1", "v", False)
        sc.judge_write(done, "k1", "v", *sc.fresh())
        assert sc.stats.torn == 1, sc.stats.incidents
        sc.node.stop_agent()
        password = sc.node.env["PK_PASSWORD"].encode()
        with Node.open(sc.node.path, password, allow_weak=True) as node, node.store.write() as tx:
            tx.delete(LOG, seq_key(2))  # a record taken out of the chain
        sc.look("file")
        assert sc.stats.torn == 2 and "AUDIT LOG BROKEN" in sc.stats.incidents[-1]
    finally:
        sc.teardown()


def test_the_renewal_judge_takes_only_the_code_that_recovers_the_key_in_use(
    tmp_path: Path,
) -> None:
    from bench.soak.nodes import Node as SoakNode
    from bench.soak.scenarios.renewal import recovers

    from polykey.node import FAST_INSECURE_KDF, Node

    node = SoakNode(tmp_path, "a")
    fast = {"kdf": FAST_INSECURE_KDF, "allow_weak": True}
    made, old = Node.bootstrap(node.path, b"soak password of a", **fast)  # type: ignore[arg-type]
    with made:
        assert recovers(node, str(old)) == ""
        new, _ = made.renew()
    assert recovers(node, str(new)) == ""
    assert recovers(node, str(old)) != ""  # the old code no longer recovers the renewed node
    other = SoakNode(tmp_path, "b")
    stranger = Node.bootstrap(other.path, b"b", **fast)  # type: ignore[arg-type]
    stranger[0].close()
    assert recovers(node, str(stranger[1])) != ""


def test_the_child_judge_notices_a_delegation_the_child_does_not_hold(tmp_path: Path) -> None:
    """A live delegation at the parent whose child has lost its parent record (what a join
    killed between the countersignature and the child's own write leaves) is a half state."""
    from bench.soak.scenarios.children import Delegations

    from polykey.node import Node
    from polykey.sync.child import PARENT

    sc = Delegations(_ctx(tmp_path), "client-cli")
    try:
        sc.setup()
        sc.clock.spare = 1.0
        sc.run_no = 1
        sc.step(60)
        assert sc.stats.acked == sc.stats.verified == 1 and not sc.stats.bad, sc.stats.incidents
        child = dict(sc.children)["c1"]
        password = child.env["PK_PASSWORD"].encode()
        with Node.open(child.path, password, allow_weak=True) as node, node.store.write() as tx:
            tx.delete(PARENT, b"parent")
        sc.judge_join(sc.a.pk("true"), "c1", child)
        assert sc.stats.torn == 1 and "a says live" in sc.stats.incidents[-1]
    finally:
        sc.teardown()


def test_the_folder_judge_notices_a_view_that_is_not_the_folder(tmp_path: Path) -> None:
    from bench.soak.scenarios.folders import FolderShares

    sc = FolderShares(_ctx(tmp_path), "server-agent")
    try:
        sc.setup()
        assert not sc.stats.bad, sc.stats.incidents  # b's first clone is the folder's view
        sc.views = [{"sub/k0": "not what a holds"}]  # as if the clone held another tree
        sc.judge_view(None, "fp", 0, "fp against a view a never had")
        assert sc.stats.torn == 1 and "not one of a's views" in sc.stats.incidents[-1]
    finally:
        sc.teardown()
