"""Every failure is one `pk: error:` line, a hint, a documented exit code, and no secret.

Exit codes are those of docs/exit-codes.md. Every check here also asserts that no traceback and
no password (nor recovery code, where one is involved) reaches standard output or error.
"""

from __future__ import annotations

import base64
import importlib.metadata
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

from tests.cli.helpers import (
    CliNode,
    assert_error,
    assert_json_error,
    assert_ok,
    corrupt_record,
    edit_header,
    json_stdout,
    non_canonical_node_id,
    text,
    write,
)
from tests.support import PASSWORD, pk_env, run_pk

WRONG = "Tr0ub4dor&3-wrong"
NEW_PASSWORD = "new password for the error tests"


def signature_of(node: CliNode, data: Path) -> Path:
    sig = data.with_name(data.name + f".{node.node_id[:8]}.sig")
    assert_ok(run_pk("keys", "sign", str(data), "-o", str(sig), env=node.env()), node.password)
    return sig


# --- passwords: wrong, missing, where they come from ------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("node", "info"),
        ("node", "check"),
        ("keys", "public"),
        ("keys", "password"),
        ("keys", "sign", "-"),
        ("keys", "decrypt", "-"),
    ],
    ids=" ".join,
)
def test_wrong_password_exits_12_with_a_recovery_hint_and_is_never_echoed(
    cli_node: CliNode, args: tuple[str, ...]
) -> None:
    before = cli_node.path.read_bytes()
    env = pk_env(cli_node.path, PK_PASSWORD=WRONG, PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk(*args, env=env, input=b"data")
    message = assert_error(result, 12, secrets=(WRONG, PASSWORD, NEW_PASSWORD))
    assert "password" in message.lower()
    assert "pk keys recover" in text(result.stderr)
    assert cli_node.path.read_bytes() == before


def test_wrong_password_with_format_json_is_a_json_error(cli_node: CliNode) -> None:
    env = pk_env(cli_node.path, PK_PASSWORD=WRONG)
    result = run_pk("node", "info", "--format", "json", env=env)
    error = assert_json_error(result, 12, secrets=(WRONG, PASSWORD))
    assert "password" in error["message"].lower()
    assert error["hint"]


def test_format_json_spelled_with_an_equals_sign_also_gives_json_errors(
    cli_node: CliNode,
) -> None:
    result = run_pk("keys", "public", "--format=json", env=pk_env(cli_node.path, PK_PASSWORD=WRONG))
    assert_json_error(result, 12, secrets=(WRONG, PASSWORD))


def test_password_file_is_read_before_pk_password(cli_node: CliNode, tmp_path: Path) -> None:
    right = write(tmp_path / "right.txt", PASSWORD + "\n")
    wrong = write(tmp_path / "wrong.txt", WRONG + "\n")
    good = run_pk(
        "node",
        "info",
        "--password-file",
        str(right),
        env=pk_env(cli_node.path, PK_PASSWORD=WRONG),
    )
    assert_ok(good, PASSWORD, WRONG)
    bad = run_pk("node", "info", "--password-file", str(wrong), env=cli_node.env())
    assert_error(bad, 12, secrets=(PASSWORD, WRONG))


def test_password_file_gives_its_first_line_only(cli_node: CliNode, tmp_path: Path) -> None:
    pw_file = write(tmp_path / "pw.txt", f"{PASSWORD}\r\nsecond line is a comment\n")
    result = run_pk("keys", "public", "--password-file", str(pw_file), env=pk_env(cli_node.path))
    assert_ok(result)


def test_unreadable_password_file_is_invalid_input(cli_node: CliNode, tmp_path: Path) -> None:
    missing = tmp_path / "nope.txt"
    result = run_pk("node", "info", "--password-file", str(missing), env=pk_env(cli_node.path))
    message = assert_error(result, 3, hint=False)
    assert str(missing) in message


def test_empty_password_is_refused_as_empty(cli_node: CliNode) -> None:
    result = run_pk("node", "info", env=pk_env(cli_node.path, PK_PASSWORD=""))
    assert "empty" in assert_error(result, 3).lower()


def test_a_password_option_on_the_command_line_is_a_usage_error_and_not_echoed(
    cli_node: CliNode,
) -> None:
    result = run_pk("node", "info", "--password", PASSWORD, env=pk_env(cli_node.path), input=b"")
    message = assert_error(result, 2)
    assert "--password" in message


@pytest.mark.parametrize(
    "args",
    [("node", "info"), ("keys", "public"), ("keys", "sign", "-")],
    ids=" ".join,
)
def test_no_password_and_stdin_not_a_terminal_exits_4(
    cli_node: CliNode, args: tuple[str, ...]
) -> None:
    result = run_pk(*args, env=pk_env(cli_node.path), input=b"")
    message = assert_error(result, 4)
    assert "terminal" in message
    assert "--password-file" in text(result.stderr)


def test_no_password_with_format_json_is_a_json_error_with_exit_code_4(
    cli_node: CliNode,
) -> None:
    result = run_pk("node", "info", "--format", "json", env=pk_env(cli_node.path), input=b"")
    assert_json_error(result, 4)


def test_bootstrap_without_a_password_and_terminal_exits_4_and_creates_no_node(
    node_path: Path,
) -> None:
    result = run_pk("bootstrap", env=pk_env(node_path), input=b"")
    assert_error(result, 4)
    assert not node_path.exists()


def test_keys_password_without_a_new_password_and_terminal_exits_4_and_changes_nothing(
    cli_node: CliNode,
) -> None:
    before = cli_node.path.read_bytes()
    result = run_pk("keys", "password", env=cli_node.env(), input=b"")
    assert_error(result, 4)
    assert cli_node.path.read_bytes() == before


def test_keys_recover_without_a_code_and_terminal_exits_4(cli_node: CliNode) -> None:
    env = pk_env(cli_node.path, PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk("keys", "recover", env=env, input=b"")
    assert_error(result, 4, secrets=(PASSWORD, NEW_PASSWORD))


# --- recovery codes -----------------------------------------------------------------------------


def test_a_valid_recovery_code_of_another_node_exits_13_and_changes_nothing(
    cli_node: CliNode, other_node: CliNode
) -> None:
    before = cli_node.path.read_bytes()
    env = pk_env(cli_node.path, PK_RECOVERY_CODE=other_node.code, PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk("keys", "recover", env=env)
    message = assert_error(
        result, 13, secrets=(other_node.code, cli_node.code, NEW_PASSWORD, PASSWORD)
    )
    assert "recovery code" in message.lower()
    assert cli_node.path.read_bytes() == before
    assert_ok(run_pk("keys", "public", env=cli_node.env()))


def _swap_two_words(code: str) -> str:
    words = code.split()
    for i in range(1, len(words)):
        if words[i] != words[0]:
            words[0], words[i] = words[i], words[0]
            return " ".join(words)
    raise AssertionError("a code of 24 equal words")


@pytest.mark.parametrize(
    ("mangle", "expected"),
    [
        (lambda code: " ".join(code.split()[:23]), "24 words"),
        (lambda code: " ".join([*code.split()[:23], "polykey"]), "BIP39"),
        (_swap_two_words, "checksum"),
    ],
    ids=["23 words", "unknown word", "bad checksum"],
)
def test_an_invalid_recovery_code_exits_13_and_says_what_is_wrong_with_the_words(
    cli_node: CliNode, mangle: Callable[[str], str], expected: str
) -> None:
    bad = mangle(cli_node.code)
    before = cli_node.path.read_bytes()
    env = pk_env(cli_node.path, PK_RECOVERY_CODE=bad, PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk("keys", "recover", env=env, input=b"")
    message = assert_error(result, 13, secrets=(bad, cli_node.code, NEW_PASSWORD, PASSWORD))
    assert expected in message
    assert "word" in text(result.stderr)  # the hint: check the words
    assert cli_node.path.read_bytes() == before


def test_an_empty_recovery_code_exits_13_as_an_invalid_code(cli_node: CliNode) -> None:
    env = pk_env(cli_node.path, PK_RECOVERY_CODE="", PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk("keys", "recover", env=env, input=b"")
    message = assert_error(result, 13, secrets=(cli_node.code, NEW_PASSWORD, PASSWORD))
    assert "password" not in message.lower()


def test_an_invalid_recovery_code_with_format_json_is_a_json_error(cli_node: CliNode) -> None:
    env = pk_env(cli_node.path, PK_RECOVERY_CODE="one two three", PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk("keys", "recover", "--format", "json", env=env)
    error = assert_json_error(result, 13, secrets=(NEW_PASSWORD,))
    assert "words" in error["message"]


# --- the node file: missing, not a node, newer, hostile, damaged ----------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("node", "info"),
        ("node", "check"),
        ("keys", "public"),
        ("keys", "password"),
        ("keys", "recover"),
        ("keys", "sign", "-"),
        ("keys", "decrypt", "-"),
    ],
    ids=" ".join,
)
def test_a_missing_node_exits_10_before_asking_for_any_secret(
    tmp_path: Path, args: tuple[str, ...]
) -> None:
    missing = tmp_path / "nowhere" / "node.pk"
    result = run_pk(*args, env=pk_env(missing), input=b"")
    message = assert_error(result, 10)
    assert str(missing) in message
    assert "pk bootstrap" in text(result.stderr)


def test_a_missing_node_with_format_json_is_a_json_error(tmp_path: Path) -> None:
    result = run_pk("keys", "public", "--format", "json", env=pk_env(tmp_path / "none.pk"))
    error = assert_json_error(result, 10)
    assert "pk bootstrap" in error["hint"]


def _sqlite_database(path: Path) -> None:
    import sqlite3

    conn = sqlite3.connect(path)
    conn.execute("CREATE TABLE notes (body TEXT)")
    conn.commit()
    conn.close()


@pytest.mark.parametrize(
    "make",
    [
        lambda p: write(p, "just some text\n"),
        lambda p: write(p, b""),
        lambda p: write(p, os.urandom(4096)),
        _sqlite_database,
    ],
    ids=["text file", "empty file", "random bytes", "other SQLite database"],
)
def test_a_file_that_is_not_a_node_exits_15(tmp_path: Path, make: Callable[[Path], Any]) -> None:
    path = tmp_path / "not-a-node"
    make(path)
    before = path.read_bytes()
    result = run_pk("node", "info", env=pk_env(path, PK_PASSWORD=PASSWORD))
    assert_error(result, 15)
    assert path.read_bytes() == before


def test_a_folder_given_as_pk_node_is_not_a_node(tmp_path: Path) -> None:
    result = run_pk("keys", "public", env=pk_env(tmp_path, PK_PASSWORD=PASSWORD))
    assert_error(result, 15)


def test_a_node_with_a_newer_format_version_exits_16_and_is_not_opened(
    cli_node: CliNode,
) -> None:
    edit_header(cli_node.path, lambda doc: doc.update(format=doc["format"] + 1))
    before = cli_node.path.read_bytes()
    for args in (("node", "info"), ("keys", "password")):
        result = run_pk(*args, env=cli_node.env(PK_NEW_PASSWORD=NEW_PASSWORD))
        message = assert_error(result, 16, secrets=(PASSWORD, NEW_PASSWORD))
        assert "format 2" in message
        assert "upgrade" in text(result.stderr).lower()
    recover = run_pk(
        "keys",
        "recover",
        env=pk_env(cli_node.path, PK_RECOVERY_CODE=cli_node.code, PK_NEW_PASSWORD=NEW_PASSWORD),
    )
    assert_error(recover, 16, secrets=(cli_node.code, NEW_PASSWORD))
    assert cli_node.path.read_bytes() == before


def test_a_newer_format_version_with_format_json_is_a_json_error(cli_node: CliNode) -> None:
    edit_header(cli_node.path, lambda doc: doc.update(format=99))
    result = run_pk("node", "info", "--format", "json", env=cli_node.env())
    assert_json_error(result, 16)


def _set_kdf(key: str, value: object) -> Callable[[dict[str, Any]], None]:
    return lambda doc: doc["kdf"].update({key: value})


@pytest.mark.parametrize(
    "change",
    [
        _set_kdf("memory_kib", 2**40),
        _set_kdf("iterations", 10**9),
        _set_kdf("lanes", 0),
        _set_kdf("memory_kib", "lots"),
        _set_kdf("alg", "scrypt"),
    ],
    ids=["1 PiB of memory", "a billion passes", "zero lanes", "memory not a number", "not argon2"],
)
def test_absurd_kdf_parameters_exit_17_without_trying_them(
    cli_node: CliNode, change: Callable[[dict[str, Any]], None]
) -> None:
    edit_header(cli_node.path, change)
    result = run_pk("node", "info", env=cli_node.env(), timeout=60)
    assert_error(result, 17)


def test_recover_also_refuses_absurd_kdf_parameters(cli_node: CliNode) -> None:
    edit_header(cli_node.path, _set_kdf("memory_kib", 2**40))
    env = pk_env(cli_node.path, PK_RECOVERY_CODE=cli_node.code, PK_NEW_PASSWORD=NEW_PASSWORD)
    assert_error(run_pk("keys", "recover", env=env), 17, secrets=(cli_node.code, NEW_PASSWORD))


def test_a_test_strength_node_is_refused_without_pk_unsafe_fast_kdf(cli_node: CliNode) -> None:
    env = cli_node.env()
    del env["PK_UNSAFE_FAST_KDF"]
    message = assert_error(run_pk("node", "info", env=env), 17)
    assert "floor" in message


def test_a_header_that_fails_its_checksum_is_damage_not_a_wrong_password(
    cli_node: CliNode,
) -> None:
    import contextlib
    import sqlite3

    with contextlib.closing(sqlite3.connect(cli_node.path)) as conn:
        conn.execute("UPDATE header SET body = CAST(replace(body, 'argon2id', 'argon2iD') AS BLOB)")
        conn.commit()
    message = assert_error(run_pk("node", "info", env=cli_node.env()), 14)
    assert "checksum" in message


@pytest.mark.parametrize(
    ("record", "args", "place"),
    [
        ("created", ("node", "info"), "created"),
        ("root-seed", ("keys", "public"), "root-seed"),
        ("root-seed", ("keys", "sign", "-"), "root-seed"),
    ],
    ids=["created record, node info", "root key, keys public", "root key, keys sign"],
)
def test_a_damaged_record_exits_14_and_names_the_record(
    cli_node: CliNode, record: str, args: tuple[str, ...], place: str
) -> None:
    corrupt_record(cli_node.path, record)
    result = run_pk(*args, env=cli_node.env(), input=b"data")
    message = assert_error(result, 14)
    assert place in message
    assert "pk node check" in text(result.stderr)


def test_a_truncated_node_file_exits_14(cli_node: CliNode) -> None:
    data = cli_node.path.read_bytes()
    cli_node.path.write_bytes(data[: len(data) // 3])
    assert_error(run_pk("node", "info", env=cli_node.env()), 14)


def test_a_damaged_node_with_format_json_is_a_json_error(cli_node: CliNode) -> None:
    corrupt_record(cli_node.path, "root-seed")
    result = run_pk("keys", "public", "--format", "json", env=cli_node.env())
    assert_json_error(result, 14)


# --- usage errors -----------------------------------------------------------------------------


@pytest.mark.parametrize(
    "args",
    [
        ("frobnicate",),
        ("node", "info", "--bogus"),
        ("node", "info", "--format", "xml"),
        ("node", "info", "--node"),
        ("keys", "sign"),
        ("keys", "verify", "a", "b"),
        ("keys", "encrypt", "a"),
        ("keys", "decrypt", "a", "b"),
    ],
    ids=" ".join,
)
def test_usage_errors_exit_2_with_one_line_and_a_help_hint(
    cli_node: CliNode, args: tuple[str, ...]
) -> None:
    result = run_pk(*args, env=cli_node.env(), input=b"")
    assert_error(result, 2)
    assert "--help" in text(result.stderr).splitlines()[1]


def test_usage_error_with_format_json_is_a_json_error(cli_node: CliNode) -> None:
    result = run_pk("keys", "sign", "--format", "json", env=cli_node.env())
    error = assert_json_error(result, 2)
    assert "--help" in error["hint"]


@pytest.mark.parametrize("args", [(), ("keys",)], ids=["pk", "pk keys"])
def test_a_missing_subcommand_gives_help_or_a_one_line_error(args: tuple[str, ...]) -> None:
    result = run_pk(*args)
    assert "Traceback" not in text(result.stderr)
    if result.returncode != 0:
        lines = text(result.stderr).splitlines()
        assert lines and lines[0].startswith("pk: error: ")
        assert all(line.startswith(("pk: error: ", "pk: hint: ")) for line in lines), lines


# --- NodeIds ------------------------------------------------------------------------------------


def _bad_node_ids(node_id: str) -> dict[str, str]:
    return {
        "empty": "",
        "too short": node_id[:-1],
        "too long": node_id + "0",
        "uppercase": node_id.upper(),
        "no multibase prefix": "z" + node_id[1:],
        "padded": node_id + "====",
        "not base32hex": node_id[:-2] + "wx",
        "non-zero trailing bits": non_canonical_node_id(node_id),
    }


BAD_NODE_ID_KINDS = list(_bad_node_ids("v" + "0" * 52))


@pytest.mark.parametrize("kind", BAD_NODE_ID_KINDS)
def test_verify_refuses_a_malformed_node_id_with_exit_3(
    template_node: CliNode, tmp_path: Path, kind: str
) -> None:
    bad = _bad_node_ids(template_node.node_id)[kind]
    data = write(tmp_path / "d.txt", "x")
    sig = write(tmp_path / "d.sig", "not looked at")
    result = run_pk("keys", "verify", str(data), str(sig), bad, env=pk_env())
    message = assert_error(result, 3)
    assert "NodeId" in message
    assert "pk keys public" in text(result.stderr)  # the hint says where NodeIds come from


@pytest.mark.parametrize("kind", ["uppercase", "non-zero trailing bits", "too short"])
def test_encrypt_refuses_a_malformed_recipient_with_exit_3_and_writes_nothing(
    template_node: CliNode, tmp_path: Path, kind: str
) -> None:
    bad = _bad_node_ids(template_node.node_id)[kind]
    data = write(tmp_path / "d.txt", "secret")
    out = tmp_path / "d.age"
    result = run_pk(
        "keys", "encrypt", str(data), "--to", template_node.node_id, "--to", bad, "-o", str(out)
    )
    assert "NodeId" in assert_error(result, 3)
    assert not out.exists()


def test_a_malformed_node_id_with_format_json_is_a_json_error(tmp_path: Path) -> None:
    data = write(tmp_path / "d.txt", "x")
    result = run_pk("keys", "encrypt", str(data), "--to", "alice", "--format", "json")
    error = assert_json_error(result, 3)
    assert "NodeId" in error["message"]


# --- signatures -------------------------------------------------------------------------------


def _armored(blob: bytes) -> str:
    body = base64.b64encode(blob).decode()
    return f"-----BEGIN SSH SIGNATURE-----\n{body}\n-----END SSH SIGNATURE-----\n"


BAD_SIGNATURES: dict[str, bytes | str] = {
    "empty": b"",
    "plain text": "this is not a signature\n",
    "binary": bytes(range(256)),
    "bad base64": "-----BEGIN SSH SIGNATURE-----\n!!!!\n-----END SSH SIGNATURE-----\n",
    "not SSHSIG": _armored(b"NOTSIG\x00\x00\x00\x01"),
    "truncated": _armored(b"SSHSIG\x00\x00\x00\x01\x00\x00\x00\x33\x00"),
    "too large": "-----BEGIN SSH SIGNATURE-----\n"
    + ("A" * 70 + "\n") * 400
    + "-----END SSH SIGNATURE-----\n",
}


@pytest.mark.parametrize("kind", list(BAD_SIGNATURES))
def test_a_file_that_is_not_a_signature_exits_22(
    template_node: CliNode, tmp_path: Path, kind: str
) -> None:
    data = write(tmp_path / "d.txt", "x")
    sig = write(tmp_path / "d.sig", BAD_SIGNATURES[kind])
    result = run_pk("keys", "verify", str(data), str(sig), template_node.node_id)
    assert_error(result, 22)


def test_a_damaged_real_signature_exits_21_or_22_never_0(
    template_node: CliNode, tmp_path: Path
) -> None:
    data = write(tmp_path / "d.txt", "important")
    sig = signature_of(template_node, data)
    lines = sig.read_text().splitlines()
    middle = lines[2]
    lines[2] = middle[:10] + ("A" if middle[10] != "A" else "B") + middle[11:]
    write(sig, "\n".join(lines) + "\n")
    result = run_pk("keys", "verify", str(data), str(sig), template_node.node_id)
    assert result.returncode in (21, 22)
    assert_error(result, result.returncode)


def test_a_signature_by_another_node_exits_21(
    template_node: CliNode, other_node: CliNode, tmp_path: Path
) -> None:
    data = write(tmp_path / "d.txt", "signed by someone else")
    sig = signature_of(other_node, data)
    result = run_pk("keys", "verify", str(data), str(sig), template_node.node_id)
    message = assert_error(result, 21)
    assert template_node.node_id in message


def test_a_signature_of_a_changed_file_exits_21(template_node: CliNode, tmp_path: Path) -> None:
    data = write(tmp_path / "d.txt", "version 1")
    sig = signature_of(template_node, data)
    write(data, "version 2")
    result = run_pk("keys", "verify", str(data), str(sig), template_node.node_id)
    assert_error(result, 21)


def test_bad_signatures_with_format_json_are_json_errors(
    template_node: CliNode, other_node: CliNode, tmp_path: Path
) -> None:
    data = write(tmp_path / "d.txt", "x")
    sig = signature_of(other_node, data)
    wrong_signer = run_pk(
        "keys", "verify", str(data), str(sig), template_node.node_id, "--format", "json"
    )
    assert_json_error(wrong_signer, 21)
    garbage = write(tmp_path / "g.sig", "garbage")
    not_a_sig = run_pk(
        "keys", "verify", str(data), str(garbage), template_node.node_id, "--format", "json"
    )
    assert_json_error(not_a_sig, 22)


def test_a_missing_signature_file_is_invalid_input(template_node: CliNode, tmp_path: Path) -> None:
    data = write(tmp_path / "d.txt", "x")
    missing = tmp_path / "none.sig"
    result = run_pk("keys", "verify", str(data), str(missing), template_node.node_id)
    assert str(missing) in assert_error(result, 3, hint=False)


# --- decryption -------------------------------------------------------------------------------


def _encrypt(to: CliNode, tmp_path: Path, payload: bytes) -> Path:
    plain = write(tmp_path / "plain", payload)
    sealed = tmp_path / "sealed.age"
    assert_ok(run_pk("keys", "encrypt", str(plain), "--to", to.node_id, "-o", str(sealed)))
    return sealed


def test_decrypting_a_file_meant_for_another_node_exits_23_and_prints_nothing(
    template_node: CliNode, other_node: CliNode, tmp_path: Path
) -> None:
    sealed = _encrypt(other_node, tmp_path, b"for the other node only")
    out = tmp_path / "out"
    result = run_pk("keys", "decrypt", str(sealed), "-o", str(out), env=template_node.env())
    assert_error(result, 23)
    assert not out.exists()


@pytest.mark.parametrize("damage", ["flip a payload byte", "cut short", "not age at all"])
def test_decrypting_a_changed_or_foreign_file_exits_23_with_no_plaintext(
    template_node: CliNode, tmp_path: Path, damage: str
) -> None:
    payload = b"attack at dawn " * 5000
    sealed = _encrypt(template_node, tmp_path, payload)
    data = bytearray(sealed.read_bytes())
    if damage == "flip a payload byte":
        data[-100] ^= 1
    elif damage == "cut short":
        del data[-1000:]
    else:
        data = bytearray(b"hello, I am plain text\n")
    write(sealed, bytes(data))
    result = run_pk("keys", "decrypt", str(sealed), env=template_node.env())
    assert_error(result, 23)
    assert b"attack" not in result.stdout


def test_a_decryption_failure_with_format_json_is_a_json_error(
    template_node: CliNode, other_node: CliNode, tmp_path: Path
) -> None:
    sealed = _encrypt(other_node, tmp_path, b"x")
    result = run_pk("keys", "decrypt", str(sealed), "--format", "json", env=template_node.env())
    assert_json_error(result, 23)


# --- entry points -------------------------------------------------------------------------------


def _script(name: str) -> str:
    path = Path(sys.executable).parent / name
    if not path.exists():
        pytest.skip(f"{name} console script is not installed next to {sys.executable}")
    return str(path)


@pytest.mark.parametrize("script", ["pk", "polykey"])
def test_console_scripts_print_the_installed_version(script: str) -> None:
    import subprocess

    version = importlib.metadata.version("polykey")
    for flag in ("--version", "-V"):
        result = subprocess.run(
            [_script(script), flag], env=pk_env(), capture_output=True, timeout=60, check=False
        )
        assert_ok(result)
        assert text(result.stdout).strip() == f"pk {version}"


def test_python_dash_m_polykey_prints_the_version() -> None:
    result = run_pk("--version")
    assert_ok(result)
    assert text(result.stdout).strip() == f"pk {importlib.metadata.version('polykey')}"


def test_help_lists_the_commands_and_says_passwords_never_come_from_argv() -> None:
    result = run_pk("--help")
    assert_ok(result)
    out = text(result.stdout)
    for command in ("bootstrap", "node", "keys"):
        assert f"  {command} " in out
    assert "never from the command line" in " ".join(out.split())


def test_every_command_accepts_format_json(template_node: CliNode) -> None:
    commands = [
        ("bootstrap",),
        ("node", "info"),
        ("node", "check"),
        ("keys", "public"),
        ("keys", "password"),
        ("keys", "recover"),
        ("keys", "sign"),
        ("keys", "verify"),
        ("keys", "encrypt"),
        ("keys", "decrypt"),
    ]
    for args in commands:
        result = run_pk(*args, "--help")
        assert_ok(result)
        assert "--format [human|json]" in text(result.stdout), args
    assert json_stdout(run_pk("keys", "public", "--format", "json", env=template_node.env()))


def test_a_misspelt_command_names_the_one_meant() -> None:
    done = run_pk("secret", "ls")
    assert done.returncode == 2
    assert b"Did you mean `pk secrets`?" in done.stderr
    assert b"Did you mean" not in run_pk("zzz").stderr
