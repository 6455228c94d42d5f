"""A node file asks for no more key-derivation work than `pk bootstrap` makes, unless the user
raises the ceiling (`pk --kdf-max-memory MIB`, `--kdf-max-iterations N`, or PK_KDF_MAX_MEMORY,
PK_KDF_MAX_ITERATIONS) for a node made elsewhere with a higher cost (defect 7 of the hardening).
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest

from polykey.crypto import kdf
from polykey.node import KdfCost, Node
from tests.cli.helpers import CliNode, assert_error, assert_json_error, assert_ok, edit_header
from tests.support import PASSWORD, pk_env, run_pk


def made_elsewhere(path: Path, cost: KdfCost) -> Path:
    """A node whose header asks for ``cost``, as a tool other than `pk bootstrap` could make it."""
    before = kdf.set_ceiling(kdf.Ceiling(cost.memory_kib, cost.iterations))
    try:
        node, _ = Node.bootstrap(path, PASSWORD.encode(), kdf=cost, allow_weak=True)
        node.close()
    finally:
        kdf.set_ceiling(before)
    return path


@pytest.fixture
def four_passes(tmp_path: Path) -> Path:
    return made_elsewhere(tmp_path / "four.pk", KdfCost(memory_kib=64, iterations=4, lanes=1))


def env(path: Path, **extra: str) -> dict[str, str]:
    return pk_env(path, PK_PASSWORD=PASSWORD, PK_NO_AGENT="1", **extra)


def test_a_node_asking_for_more_passes_is_refused_naming_the_bound_and_the_flag(
    four_passes: Path,
) -> None:
    result = run_pk("node", "info", env=env(four_passes))
    message = assert_error(result, 17)
    assert "iterations" in message and "4" in message and "3" in message, message
    hint = result.stderr.decode().splitlines()[1]
    assert "--kdf-max-iterations" in hint and "PK_KDF_MAX_ITERATIONS" in hint, hint
    assert_json_error(run_pk("node", "info", "--format", "json", env=env(four_passes)), 17)


def test_the_flag_or_the_variable_raises_the_ceiling(four_passes: Path) -> None:
    flagged = run_pk("--kdf-max-iterations", "4", "node", "info", env=env(four_passes))
    assert_ok(flagged)
    assert "4 iterations" in flagged.stdout.decode()
    assert_ok(run_pk("node", "info", env=env(four_passes, PK_KDF_MAX_ITERATIONS="4")))
    too_low = run_pk("--kdf-max-iterations", "3", "node", "info", env=env(four_passes))
    assert_error(too_low, 17)


def test_more_memory_than_bootstrap_uses_needs_the_memory_flag(tmp_path: Path) -> None:
    path = made_elsewhere(tmp_path / "big.pk", KdfCost(memory_kib=65 * 1024, iterations=1, lanes=1))
    refused = run_pk("node", "info", env=env(path))
    message = assert_error(refused, 17)
    assert "memory" in message and "64 MiB" in message, message
    assert "--kdf-max-memory" in refused.stderr.decode().splitlines()[1]
    assert_ok(run_pk("--kdf-max-memory", "65", "node", "info", env=env(path)))
    assert_ok(run_pk("node", "info", env=env(path, PK_KDF_MAX_MEMORY="65")))


def _hostile(doc: dict[str, Any]) -> None:
    doc["kdf"].update(memory_kib=4 * 1024 * 1024, iterations=64)


@pytest.mark.parametrize(
    "args",
    [("node", "info"), ("node", "check"), ("keys", "password")],
)
def test_a_header_asking_for_4_gib_and_64_passes_is_refused(
    cli_node: CliNode, args: tuple[str, ...]
) -> None:
    edit_header(cli_node.path, _hostile)
    result = run_pk(*args, env=cli_node.env(PK_NO_AGENT="1", PK_NEW_PASSWORD="new pw 123"))
    assert "memory" in assert_error(result, 17, secrets=(PASSWORD, "new pw 123"))


def test_the_agent_started_with_the_flag_opens_the_node(four_passes: Path, tmp_path: Path) -> None:
    runtime = tmp_path / "run"
    agent_env = pk_env(four_passes, PK_PASSWORD=PASSWORD, PK_RUNTIME_DIR=str(runtime))
    refused = run_pk("agent", "start", "--background", env=agent_env)
    assert_error(refused, 17, stdout_empty=False)
    started = run_pk("--kdf-max-iterations", "4", "agent", "start", "--background", env=agent_env)
    try:
        assert started.returncode == 0, started.stderr.decode()
        assert_ok(run_pk("vaults", "list", env=agent_env))
    finally:
        run_pk("agent", "stop", env=agent_env)


@pytest.mark.parametrize(
    ("args", "variables"),
    [
        (("--kdf-max-memory", "4097"), {}),
        (("--kdf-max-iterations", "65"), {}),
        (("--kdf-max-memory", "0"), {}),
        ((), {"PK_KDF_MAX_MEMORY": "lots"}),
    ],
    ids=["memory-above-4-GiB", "iterations-above-64", "zero", "not-a-number"],
)
def test_the_ceiling_cannot_be_raised_past_the_hard_bounds(
    cli_node: CliNode, args: tuple[str, ...], variables: dict[str, str]
) -> None:
    result = run_pk(*args, "node", "info", env=cli_node.env(**variables))
    assert_error(result, 2)


def test_the_cli_bounds_are_the_hard_bounds_of_the_kdf() -> None:
    from polykey.cli import app

    assert app.KDF_HARD_MAX_MEMORY_MIB * 1024 == kdf.MAX_MEMORY_KIB
    assert app.KDF_HARD_MAX_ITERATIONS == kdf.MAX_ITERATIONS
