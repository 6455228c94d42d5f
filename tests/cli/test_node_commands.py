"""`pk node info` and `pk node check`, and where the node file is looked for."""

from __future__ import annotations

import json
import re
import sys
from pathlib import Path

import pytest

from tests.cli.helpers import (
    CliNode,
    assert_error,
    assert_ok,
    bootstrap,
    corrupt_record,
    json_stdout,
    text,
)
from tests.support import PASSWORD, pk_env, run_pk

# --- node info --------------------------------------------------------------------------------


def test_node_info_lists_node_id_file_format_kdf_created_and_vaults(cli_node: CliNode) -> None:
    result = run_pk("node", "info", env=cli_node.env())
    assert_ok(result)
    rows = dict(
        re.split(r"\s{2,}", line.strip(), maxsplit=1) for line in text(result.stdout).splitlines()
    )
    assert list(rows) == ["NodeId", "Node file", "Format", "KDF", "Created", "Vaults"]
    assert rows["NodeId"] == cli_node.node_id
    assert rows["Node file"] == str(cli_node.path)
    assert rows["Format"] == "1"
    assert rows["KDF"].startswith("argon2id")
    assert re.fullmatch(r"\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\+00:00", rows["Created"])
    assert rows["Vaults"] == "0"


def test_node_info_json_has_the_same_facts_as_numbers(cli_node: CliNode) -> None:
    result = run_pk("node", "info", "--format", "json", env=cli_node.env())
    assert_ok(result)
    doc = json_stdout(result)
    assert set(doc) == {"node_id", "path", "format", "kdf", "created", "vault_count", "epoch"}
    assert doc["node_id"] == cli_node.node_id
    assert doc["path"] == str(cli_node.path)
    assert doc["format"] == 1
    assert doc["vault_count"] == 0
    assert isinstance(doc["epoch"], int) and doc["epoch"] >= 1
    kdf = doc["kdf"]
    assert kdf["algorithm"] == "argon2id"
    for key in ("memory_kib", "iterations", "lanes"):
        assert isinstance(kdf[key], int) and kdf[key] >= 1


def test_node_info_does_not_change_the_node_file(cli_node: CliNode) -> None:
    before = cli_node.path.read_bytes()
    assert_ok(run_pk("node", "info", env=cli_node.env()))
    assert cli_node.path.read_bytes() == before


# --- node check ---------------------------------------------------------------------------------


def test_node_check_says_a_whole_node_is_whole(cli_node: CliNode) -> None:
    result = run_pk("node", "check", env=cli_node.env())
    assert_ok(result)
    assert "whole" in text(result.stdout)


def test_node_check_json_of_a_whole_node_is_ok_with_no_damage(cli_node: CliNode) -> None:
    result = run_pk("node", "check", "--format", "json", env=cli_node.env())
    assert_ok(result)
    assert json_stdout(result) == {"ok": True, "damage": []}


def test_node_check_names_a_damaged_record_and_exits_14(cli_node: CliNode) -> None:
    corrupt_record(cli_node.path, "created")
    result = run_pk("node", "check", env=cli_node.env())
    assert result.returncode == 14, text(result.stderr)
    assert result.stdout == b""
    lines = text(result.stderr).splitlines()
    assert lines[0].startswith("damaged: node/meta/created")
    assert lines[1].startswith("pk: error: ")
    assert lines[2].startswith("pk: hint: ")
    assert len(lines) == 3
    assert "Traceback" not in text(result.stderr)
    assert PASSWORD not in text(result.stderr)


def test_node_check_json_lists_the_damage_and_reports_a_json_error(cli_node: CliNode) -> None:
    corrupt_record(cli_node.path, "created")
    result = run_pk("node", "check", "--format", "json", env=cli_node.env())
    assert result.returncode == 14
    doc = json_stdout(result)
    assert doc["ok"] is False
    assert [d["place"] for d in doc["damage"]] == ["node/meta/created"]
    assert all(isinstance(d["problem"], str) and d["problem"] for d in doc["damage"])
    error = json.loads(text(result.stderr))
    assert error["error"]["exit_code"] == 14


def test_node_check_lists_damage_to_the_root_key_record(cli_node: CliNode) -> None:
    corrupt_record(cli_node.path, "root-seed")
    result = run_pk("node", "check", "--format", "json", env=cli_node.env())
    assert result.returncode == 14, text(result.stderr)
    doc = json_stdout(result)
    assert doc["ok"] is False
    assert [d["place"] for d in doc["damage"]] == ["node/keys/root-seed"]


def test_node_check_does_not_change_a_whole_node_file(cli_node: CliNode) -> None:
    before = cli_node.path.read_bytes()
    assert_ok(run_pk("node", "check", env=cli_node.env()))
    assert cli_node.path.read_bytes() == before


# --- where the node is --------------------------------------------------------------------------


def test_node_option_wins_over_pk_node(cli_node: CliNode, tmp_path: Path) -> None:
    missing = tmp_path / "missing.pk"
    env = pk_env(missing, PK_PASSWORD=PASSWORD)
    chosen = run_pk("node", "info", "--node", str(cli_node.path), "--format", "json", env=env)
    assert_ok(chosen)
    assert json_stdout(chosen)["path"] == str(cli_node.path)

    env = cli_node.env()
    not_found = run_pk("node", "info", "--node", str(missing), env=env)
    assert str(missing) in assert_error(not_found, 10)


def test_pk_node_is_used_when_there_is_no_node_option(cli_node: CliNode) -> None:
    result = run_pk("keys", "public", "--format", "json", env=cli_node.env())
    assert_ok(result)
    assert json_stdout(result)["node_id"] == cli_node.node_id


@pytest.mark.skipif(sys.platform != "linux", reason="XDG_DATA_HOME is the Linux data directory")
def test_without_node_option_or_pk_node_the_node_lives_in_the_platform_data_dir(
    tmp_path: Path,
) -> None:
    data_home = tmp_path / "xdg-data"
    env = pk_env(None, PK_PASSWORD=PASSWORD, XDG_DATA_HOME=str(data_home), HOME=str(tmp_path))
    made = run_pk("bootstrap", "--format", "json", env=env)
    assert_ok(made)
    expected = data_home / "polykey" / "node.pk"
    assert json_stdout(made)["path"] == str(expected)
    assert expected.is_file()
    info = run_pk("node", "info", "--format", "json", env=env)
    assert_ok(info)
    assert json_stdout(info)["node_id"] == json_stdout(made)["node_id"]


def test_bootstrap_creates_missing_parent_folders_of_the_node_path(tmp_path: Path) -> None:
    path = tmp_path / "usb" / "deep" / "node.pk"
    node = bootstrap(path)
    assert path.is_file()
    result = run_pk("node", "info", "--format", "json", env=node.env())
    assert_ok(result)
    assert json_stdout(result)["node_id"] == node.node_id


def test_node_check_of_a_damaged_root_record_does_not_send_the_user_to_itself(
    cli_node: CliNode,
) -> None:
    import sqlite3

    with sqlite3.connect(cli_node.path) as db:
        (sealed,) = db.execute("SELECT sealed FROM root WHERE id = 1").fetchone()
        flipped = bytes([sealed[0], sealed[1] ^ 1]) + bytes(sealed[2:])
        db.execute("UPDATE root SET sealed = ? WHERE id = 1", (flipped,))
    result = run_pk("node", "check", env=cli_node.env())
    assert result.returncode == 14, text(result.stderr)
    hint = [line for line in text(result.stderr).splitlines() if line.startswith("pk: hint: ")]
    assert len(hint) == 1
    assert "pk node check" not in hint[0]
    assert "restore the node file from a copy or a backup node" in hint[0]
    assert "Places not listed are intact" not in text(result.stderr)
