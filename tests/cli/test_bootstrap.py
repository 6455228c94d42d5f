"""`pk bootstrap`: a new node, its recovery code shown once, restoring an identity, refusals."""

from __future__ import annotations

import re
import stat
from pathlib import Path

from tests.cli.helpers import (
    CliNode,
    assert_error,
    assert_json_error,
    assert_ok,
    bootstrap,
    json_stdout,
    text,
    write,
)
from tests.support import PASSWORD, pk_env, run_pk

NODE_ID = re.compile(r"v[0-9a-v]{52}")
CODE_LINE = re.compile(r"^\s*((?:[a-z]+ ){23}[a-z]+)\s*$", re.MULTILINE)
NEW_PASSWORD = "a brand new passphrase"


def recovery_codes_in(output: str) -> list[str]:
    return CODE_LINE.findall(output)


def node_id_of(node: Path, password: str = PASSWORD) -> str:
    result = run_pk("node", "info", "--format", "json", env=pk_env(node, PK_PASSWORD=password))
    assert_ok(result, password)
    node_id = json_stdout(result)["node_id"]
    assert isinstance(node_id, str)
    return node_id


# --- happy paths ------------------------------------------------------------------------------


def test_bootstrap_prints_node_id_node_file_and_one_24_word_recovery_code(
    node_path: Path,
) -> None:
    result = run_pk("bootstrap", env=pk_env(node_path, PK_PASSWORD=PASSWORD))
    assert_ok(result)
    out = text(result.stdout)
    created = re.search(r"^Created node (\S+)$", out, re.MULTILINE)
    assert created is not None, out
    assert NODE_ID.fullmatch(created.group(1))
    assert f"Node file: {node_path}" in out
    codes = recovery_codes_in(out)
    assert len(codes) == 1, out
    assert len(codes[0].split()) == 24
    assert out.count(codes[0]) == 1
    assert "pk keys recover" in out  # says what the code is for
    assert node_path.is_file()
    assert node_id_of(node_path) == created.group(1)


def test_bootstrap_json_gives_node_id_path_and_recovery_code(node_path: Path) -> None:
    result = run_pk("bootstrap", "--format", "json", env=pk_env(node_path, PK_PASSWORD=PASSWORD))
    assert_ok(result)
    doc = json_stdout(result)
    assert set(doc) == {"node_id", "path", "recovery_code"}
    assert NODE_ID.fullmatch(doc["node_id"])
    assert doc["path"] == str(node_path)
    assert len(doc["recovery_code"].split()) == 24


def test_bootstrap_creates_the_node_file_readable_only_by_its_owner(node_path: Path) -> None:
    bootstrap(node_path)
    assert stat.S_IMODE(node_path.stat().st_mode) == 0o600


def test_two_bootstraps_give_different_node_ids_and_codes(tmp_path: Path) -> None:
    first = bootstrap(tmp_path / "a.pk")
    second = bootstrap(tmp_path / "b.pk")
    assert first.node_id != second.node_id
    assert first.code != second.code


def test_later_commands_never_show_the_recovery_code_again(cli_node: CliNode) -> None:
    words = cli_node.code.split()
    for args in (
        ("node", "info"),
        ("node", "info", "--format", "json"),
        ("keys", "public", "--format", "json"),
    ):
        result = run_pk(*args, env=cli_node.env())
        assert_ok(result)
        out = text(result.stdout)
        assert cli_node.code not in out
        assert " ".join(words[:4]) not in out


def test_recover_with_the_printed_code_sets_a_new_password_and_keeps_the_node_id(
    node_path: Path,
) -> None:
    made = run_pk("bootstrap", env=pk_env(node_path, PK_PASSWORD=PASSWORD))
    assert_ok(made)
    (code,) = recovery_codes_in(text(made.stdout))
    original_id = node_id_of(node_path)

    recovered = run_pk(
        "keys",
        "recover",
        env=pk_env(node_path, PK_RECOVERY_CODE=code, PK_NEW_PASSWORD=NEW_PASSWORD),
    )
    assert_ok(recovered, PASSWORD, NEW_PASSWORD, code)
    assert text(recovered.stdout).strip() == f"New password set for {original_id}."

    old = run_pk("node", "info", env=pk_env(node_path, PK_PASSWORD=PASSWORD))
    assert_error(old, 12, secrets=(PASSWORD, NEW_PASSWORD))
    assert node_id_of(node_path, NEW_PASSWORD) == original_id


def test_recovery_code_file_restores_the_same_node_id_and_public_key(
    template_node: CliNode, tmp_path: Path
) -> None:
    code_file = write(tmp_path / "code.txt", template_node.code + "\n")
    restored = tmp_path / "restored.pk"
    env = pk_env(restored, PK_PASSWORD="a different password")
    result = run_pk("bootstrap", "--recovery-code-file", str(code_file), env=env)
    assert_ok(result, "a different password", template_node.code)
    out = text(result.stdout)
    assert f"Created node {template_node.node_id}" in out
    assert recovery_codes_in(out) == []  # the user already has the code: not shown

    original = run_pk("keys", "public", "--format", "json", env=template_node.env())
    again = run_pk("keys", "public", "--format", "json", env=env)
    assert_ok(original)
    assert_ok(again, "a different password")
    assert json_stdout(again) == json_stdout(original)
    assert json_stdout(again)["node_id"] == template_node.node_id


def test_recovery_code_file_json_output_omits_the_code(
    template_node: CliNode, tmp_path: Path
) -> None:
    code_file = write(tmp_path / "code.txt", template_node.code)
    restored = tmp_path / "restored.pk"
    result = run_pk(
        "bootstrap",
        "--recovery-code-file",
        str(code_file),
        "--format",
        "json",
        env=pk_env(restored, PK_PASSWORD=PASSWORD),
    )
    assert_ok(result, PASSWORD, template_node.code)
    assert json_stdout(result) == {"node_id": template_node.node_id, "path": str(restored)}


def test_recovery_code_out_writes_the_code_to_an_owner_only_file_not_to_stdout(
    node_path: Path, tmp_path: Path
) -> None:
    out_file = tmp_path / "code.txt"
    env = pk_env(node_path, PK_PASSWORD=PASSWORD)
    result = run_pk("bootstrap", "--recovery-code-out", str(out_file), env=env)
    assert_ok(result)
    assert stat.S_IMODE(out_file.stat().st_mode) == 0o600
    code = out_file.read_text()
    assert code.endswith("\n") and len(code.split()) == 24
    out = text(result.stdout)
    assert recovery_codes_in(out) == []
    assert code.strip() not in out
    assert f"Recovery code written to {out_file}" in out

    # The file holds this node's code: it recovers the node.
    recovered = run_pk(
        "keys",
        "recover",
        "--recovery-code-file",
        str(out_file),
        env=pk_env(node_path, PK_NEW_PASSWORD=NEW_PASSWORD),
    )
    assert_ok(recovered, NEW_PASSWORD, code.strip())


def test_recovery_code_out_json_output_omits_the_code(node_path: Path, tmp_path: Path) -> None:
    out_file = tmp_path / "code.txt"
    result = run_pk(
        "bootstrap",
        "--recovery-code-out",
        str(out_file),
        "--format",
        "json",
        env=pk_env(node_path, PK_PASSWORD=PASSWORD),
    )
    assert_ok(result)
    doc = json_stdout(result)
    assert set(doc) == {"node_id", "path"}
    assert out_file.read_text().strip() not in text(result.stdout)


def test_recovery_code_out_refuses_an_existing_file_and_creates_no_node(
    node_path: Path, tmp_path: Path
) -> None:
    out_file = write(tmp_path / "code.txt", "keep me\n")
    result = run_pk(
        "bootstrap",
        "--recovery-code-out",
        str(out_file),
        env=pk_env(node_path, PK_PASSWORD=PASSWORD),
    )
    message = assert_error(result, 3)
    assert str(out_file) in message and "exists" in message
    assert out_file.read_text() == "keep me\n"
    assert not node_path.exists()


def test_recovery_code_out_in_a_missing_folder_fails_cleanly_and_creates_no_node(
    node_path: Path, tmp_path: Path
) -> None:
    out_file = tmp_path / "no such folder" / "code.txt"
    result = run_pk(
        "bootstrap",
        "--recovery-code-out",
        str(out_file),
        env=pk_env(node_path, PK_PASSWORD=PASSWORD),
    )
    assert_error(result, 3, hint=False)
    assert not node_path.exists()


# --- refusals -----------------------------------------------------------------------------------


def test_bootstrap_refuses_an_existing_node_and_leaves_it_byte_identical(
    cli_node: CliNode,
) -> None:
    before = cli_node.path.read_bytes()
    result = run_pk("bootstrap", env=pk_env(cli_node.path, PK_PASSWORD="some other password"))
    message = assert_error(result, 11, secrets=("some other password", PASSWORD))
    assert str(cli_node.path) in message
    assert cli_node.path.read_bytes() == before
    assert node_id_of(cli_node.path) == cli_node.node_id


def test_bootstrap_json_refusal_of_an_existing_node_is_a_json_error(cli_node: CliNode) -> None:
    before = cli_node.path.read_bytes()
    result = run_pk("bootstrap", "--format", "json", env=cli_node.env())
    error = assert_json_error(result, 11)
    assert "bootstrap" in error["hint"].lower() or "--node" in error["hint"]
    assert cli_node.path.read_bytes() == before


def test_bootstrap_refuses_an_existing_node_before_asking_for_a_password(
    cli_node: CliNode,
) -> None:
    result = run_pk("bootstrap", env=pk_env(cli_node.path), input=b"")  # stdin: not a terminal
    assert_error(result, 11)


def test_bootstrap_with_an_invalid_recovery_code_file_creates_no_node(
    node_path: Path, tmp_path: Path
) -> None:
    code_file = write(tmp_path / "code.txt", "abandon " * 23 + "zebra\n")
    result = run_pk(
        "bootstrap",
        "--recovery-code-file",
        str(code_file),
        env=pk_env(node_path, PK_PASSWORD=PASSWORD),
    )
    message = assert_error(result, 13)
    assert "checksum" in message
    assert not node_path.exists()


def test_bootstrap_with_an_empty_password_is_refused_and_creates_no_node(
    node_path: Path,
) -> None:
    result = run_pk("bootstrap", env=pk_env(node_path, PK_PASSWORD=""))
    message = assert_error(result, 3)
    assert "empty" in message.lower()
    assert not node_path.exists()


def test_bootstrap_with_an_empty_recovery_code_file_reports_an_invalid_code(
    node_path: Path, tmp_path: Path
) -> None:
    code_file = write(tmp_path / "code.txt", "")
    result = run_pk(
        "bootstrap",
        "--recovery-code-file",
        str(code_file),
        env=pk_env(node_path, PK_PASSWORD=PASSWORD),
    )
    message = assert_error(result, 13)
    assert "password" not in message.lower()
    assert not node_path.exists()


def test_bootstrap_with_a_missing_recovery_code_file_names_the_recovery_code_file(
    node_path: Path, tmp_path: Path
) -> None:
    missing = tmp_path / "no-code.txt"
    result = run_pk(
        "bootstrap",
        "--recovery-code-file",
        str(missing),
        env=pk_env(node_path, PK_PASSWORD=PASSWORD),
    )
    message = assert_error(result, 3, hint=False)
    assert str(missing) in message
    assert "recovery code" in message and "password" not in message
    assert not node_path.exists()
