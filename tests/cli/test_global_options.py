"""--node, --password-file and --format may come before the command, as users type them."""

from __future__ import annotations

import json
from pathlib import Path

from tests.cli.helpers import CliNode
from tests.support import pk_env, run_pk


def test_node_and_format_before_the_command(cli_node: CliNode, other_node: CliNode) -> None:
    env = pk_env(PK_PASSWORD=cli_node.password)  # no PK_NODE: only the option names the node
    done = run_pk("--node", str(cli_node.path), "--format", "json", "node", "info", env=env)
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["node_id"] == cli_node.node_id


def test_the_command_s_own_option_wins(cli_node: CliNode, other_node: CliNode) -> None:
    env = pk_env(PK_PASSWORD=other_node.password)
    done = run_pk(
        "--node", str(cli_node.path), "node", "info", "--node", str(other_node.path),
        "--format", "json", env=env,
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
    assert json.loads(done.stdout)["node_id"] == other_node.node_id


def test_password_file_before_the_command(cli_node: CliNode, tmp_path: Path) -> None:
    secret = tmp_path / "pw"
    secret.write_text(cli_node.password + "\n")
    done = run_pk(
        "--password-file", str(secret), "--node", str(cli_node.path), "vaults", "list",
        env=pk_env(),
    )  # fmt: skip
    assert done.returncode == 0, done.stderr.decode()
