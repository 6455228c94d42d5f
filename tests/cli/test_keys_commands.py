"""`pk keys ...`: public key, password, recovery, signatures (with ssh-keygen) and encryption."""

from __future__ import annotations

import base64
import shutil
import stat
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import (
    CliNode,
    assert_error,
    assert_ok,
    json_stdout,
    text,
    write,
)
from tests.support import PASSWORD, pk_env, run_pk

NEW_PASSWORD = "the new passphrase 2"
SSH_SIG_BEGIN = "-----BEGIN SSH SIGNATURE-----"
SSH_SIG_END = "-----END SSH SIGNATURE-----"
AGE_ARMOR_BEGIN = b"-----BEGIN AGE ENCRYPTED FILE-----"


def no_node_env() -> dict[str, str]:
    """No node and no password: for the commands that need neither."""
    return pk_env(None)


def opens_with(node: CliNode, password: str) -> bool:
    result = run_pk("keys", "public", env=pk_env(node.path, PK_PASSWORD=password), input=b"")
    if result.returncode == 0:
        return True
    assert_error(result, 12, secrets=(password, PASSWORD, NEW_PASSWORD))
    return False


# --- keys public ------------------------------------------------------------------------------


def test_keys_public_prints_the_node_id_and_an_openssh_ed25519_line(cli_node: CliNode) -> None:
    result = run_pk("keys", "public", env=cli_node.env())
    assert_ok(result)
    node_id, ssh = text(result.stdout).splitlines()
    assert node_id == cli_node.node_id
    key_type, blob, comment = ssh.split(" ")
    assert key_type == "ssh-ed25519"
    assert comment == cli_node.node_id
    raw = base64.b64decode(blob)
    assert raw[:15] == b"\x00\x00\x00\x0bssh-ed25519"
    assert len(raw) == 15 + 4 + 32


def test_keys_public_json_has_the_node_id_and_the_openssh_line(cli_node: CliNode) -> None:
    human = run_pk("keys", "public", env=cli_node.env())
    result = run_pk("keys", "public", "--format", "json", env=cli_node.env())
    assert_ok(result)
    doc = json_stdout(result)
    assert doc == {"node_id": cli_node.node_id, "openssh": text(human.stdout).splitlines()[1]}


# --- keys password --------------------------------------------------------------------------------


def test_keys_password_from_pk_new_password_replaces_the_old_password(cli_node: CliNode) -> None:
    result = run_pk("keys", "password", env=cli_node.env(PK_NEW_PASSWORD=NEW_PASSWORD))
    assert_ok(result, PASSWORD, NEW_PASSWORD)
    assert text(result.stdout).strip() == "Password changed."
    assert opens_with(cli_node, NEW_PASSWORD)
    assert not opens_with(cli_node, PASSWORD)


def test_keys_password_json_with_new_password_file(cli_node: CliNode, tmp_path: Path) -> None:
    new_file = write(tmp_path / "new.txt", NEW_PASSWORD + "\n")
    result = run_pk(
        "keys",
        "password",
        "--new-password-file",
        str(new_file),
        "--format",
        "json",
        env=cli_node.env(PK_NEW_PASSWORD="not this one"),
    )
    assert_ok(result, PASSWORD, NEW_PASSWORD)
    assert json_stdout(result) == {"changed": True}
    assert opens_with(cli_node, NEW_PASSWORD)
    assert not opens_with(cli_node, "not this one")


def test_keys_password_with_wrong_current_password_changes_nothing(cli_node: CliNode) -> None:
    before = cli_node.path.read_bytes()
    env = pk_env(cli_node.path, PK_PASSWORD="wrong", PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk("keys", "password", env=env)
    assert_error(result, 12, secrets=("wrong", NEW_PASSWORD, PASSWORD))
    assert cli_node.path.read_bytes() == before


def test_recovery_code_still_works_after_a_password_change(cli_node: CliNode) -> None:
    changed = run_pk("keys", "password", env=cli_node.env(PK_NEW_PASSWORD=NEW_PASSWORD))
    assert_ok(changed, PASSWORD, NEW_PASSWORD)
    env = pk_env(cli_node.path, PK_RECOVERY_CODE=cli_node.code, PK_NEW_PASSWORD="third one")
    recovered = run_pk("keys", "recover", env=env)
    assert_ok(recovered, cli_node.code, "third one")
    assert opens_with(cli_node, "third one")


# --- keys recover -----------------------------------------------------------------------------


def test_keys_recover_json_with_code_file_and_new_password_file(
    cli_node: CliNode, tmp_path: Path
) -> None:
    code_file = write(tmp_path / "code.txt", cli_node.code + "\n")
    new_file = write(tmp_path / "new.txt", NEW_PASSWORD)
    result = run_pk(
        "keys",
        "recover",
        "--recovery-code-file",
        str(code_file),
        "--new-password-file",
        str(new_file),
        "--format",
        "json",
        env=pk_env(cli_node.path),
    )
    assert_ok(result, cli_node.code, NEW_PASSWORD)
    assert json_stdout(result) == {"node_id": cli_node.node_id, "recovered": True}
    assert opens_with(cli_node, NEW_PASSWORD)
    assert not opens_with(cli_node, PASSWORD)


def test_keys_recover_reads_the_code_file_before_pk_recovery_code(
    cli_node: CliNode, other_node: CliNode, tmp_path: Path
) -> None:
    code_file = write(tmp_path / "code.txt", cli_node.code)
    env = pk_env(cli_node.path, PK_RECOVERY_CODE=other_node.code, PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk("keys", "recover", "--recovery-code-file", str(code_file), env=env)
    assert_ok(result, cli_node.code, other_node.code, NEW_PASSWORD)


def test_keys_recover_accepts_the_code_in_any_case_and_spacing(cli_node: CliNode) -> None:
    sloppy = "  " + "   ".join(cli_node.code.upper().split()) + "  \t"
    env = pk_env(cli_node.path, PK_RECOVERY_CODE=sloppy, PK_NEW_PASSWORD=NEW_PASSWORD)
    result = run_pk("keys", "recover", env=env)
    assert_ok(result, NEW_PASSWORD, cli_node.code)
    assert opens_with(cli_node, NEW_PASSWORD)


def test_keys_recover_leaves_the_node_whole(cli_node: CliNode) -> None:
    env = pk_env(cli_node.path, PK_RECOVERY_CODE=cli_node.code, PK_NEW_PASSWORD=NEW_PASSWORD)
    assert_ok(run_pk("keys", "recover", env=env), NEW_PASSWORD, cli_node.code)
    check = run_pk(
        "node", "check", "--format", "json", env=pk_env(cli_node.path, PK_PASSWORD=NEW_PASSWORD)
    )
    assert_ok(check, NEW_PASSWORD)
    assert json_stdout(check) == {"ok": True, "damage": []}


# --- keys sign / keys verify --------------------------------------------------------------------


def test_sign_to_a_file_then_verify_says_good_signature(
    template_node: CliNode, tmp_path: Path
) -> None:
    data = write(tmp_path / "data.txt", "the quick brown fox\n")
    sig = tmp_path / "data.txt.sig"
    signed = run_pk("keys", "sign", str(data), "-o", str(sig), env=template_node.env())
    assert_ok(signed)
    assert signed.stdout == b""
    armored = sig.read_text()
    assert armored.startswith(SSH_SIG_BEGIN + "\n")
    assert armored.rstrip("\n").endswith(SSH_SIG_END)
    assert stat.S_IMODE(sig.stat().st_mode) == 0o600

    verified = run_pk("keys", "verify", str(data), str(sig), template_node.node_id, env=pk_env())
    assert_ok(verified)
    assert text(verified.stdout).strip() == f"Good signature by {template_node.node_id}."


def test_sign_json_gives_the_signature_and_verify_json_says_valid(
    template_node: CliNode, tmp_path: Path
) -> None:
    data = write(tmp_path / "data.bin", bytes(range(256)) * 3)
    signed = run_pk("keys", "sign", str(data), "--format", "json", env=template_node.env())
    assert_ok(signed)
    doc = json_stdout(signed)
    assert set(doc) == {"signature"}
    assert doc["signature"].startswith(SSH_SIG_BEGIN)
    sig = write(tmp_path / "data.sig", doc["signature"])

    verified = run_pk(
        "keys",
        "verify",
        str(data),
        str(sig),
        template_node.node_id,
        "--format",
        "json",
        env=no_node_env(),
    )
    assert_ok(verified)
    assert json_stdout(verified) == {"valid": True, "node_id": template_node.node_id}


def test_sign_reads_standard_input_and_writes_the_signature_to_standard_output(
    template_node: CliNode, tmp_path: Path
) -> None:
    payload = b"from a pipe\x00\xff"
    signed = run_pk("keys", "sign", "-", env=template_node.env(), input=payload)
    assert_ok(signed)
    assert text(signed.stdout).startswith(SSH_SIG_BEGIN)
    sig = write(tmp_path / "pipe.sig", signed.stdout)
    data = write(tmp_path / "pipe.bin", payload)
    verified = run_pk("keys", "verify", str(data), str(sig), template_node.node_id)
    assert_ok(verified)


def test_verify_reads_the_signed_file_from_standard_input(
    template_node: CliNode, tmp_path: Path
) -> None:
    data = write(tmp_path / "d.txt", "stdin data\n")
    sig = tmp_path / "d.sig"
    assert_ok(run_pk("keys", "sign", str(data), "-o", str(sig), env=template_node.env()))
    result = run_pk("keys", "verify", "-", str(sig), template_node.node_id, input=data.read_bytes())
    assert_ok(result)


def test_sign_refuses_to_overwrite_an_existing_output_file(
    template_node: CliNode, tmp_path: Path
) -> None:
    data = write(tmp_path / "d.txt", "x")
    existing = write(tmp_path / "d.sig", "precious")
    result = run_pk("keys", "sign", str(data), "-o", str(existing), env=template_node.env())
    assert "exists" in assert_error(result, 3)
    assert existing.read_text() == "precious"


@pytest.mark.skipif(shutil.which("ssh-keygen") is None, reason="ssh-keygen is not installed")
def test_stock_ssh_keygen_verifies_a_pk_signature_with_the_pk_keys_public_key(
    template_node: CliNode, tmp_path: Path
) -> None:
    data = write(tmp_path / "release.tar", b"release contents\n" * 100)
    sig = tmp_path / "release.tar.sig"
    assert_ok(run_pk("keys", "sign", str(data), "-o", str(sig), env=template_node.env()))
    public = run_pk("keys", "public", "--format", "json", env=template_node.env())
    assert_ok(public)
    key_type, blob = json_stdout(public)["openssh"].split()[:2]
    allowed = write(tmp_path / "allowed_signers", f"alice@example {key_type} {blob}\n")

    def ssh_keygen_verify(payload: bytes) -> subprocess.CompletedProcess[bytes]:
        argv = ["ssh-keygen", "-Y", "verify", "-f", str(allowed), "-I", "alice@example"]
        return subprocess.run(
            [*argv, "-n", "file", "-s", str(sig)],
            input=payload,
            capture_output=True,
            timeout=30,
            check=False,
        )

    good = ssh_keygen_verify(data.read_bytes())
    assert good.returncode == 0, text(good.stderr)
    assert b"Good" in good.stdout + good.stderr
    tampered = ssh_keygen_verify(data.read_bytes() + b"!")
    assert tampered.returncode != 0


# --- keys encrypt / keys decrypt ----------------------------------------------------------------


def test_encrypt_to_a_node_then_decrypt_gives_back_the_bytes(
    template_node: CliNode, tmp_path: Path
) -> None:
    payload = bytes(range(256)) * 300  # binary, more than one 64 KiB chunk
    plain = write(tmp_path / "plain.bin", payload)
    sealed = tmp_path / "plain.age"
    encrypted = run_pk(
        "keys",
        "encrypt",
        str(plain),
        "--to",
        template_node.node_id,
        "-o",
        str(sealed),
        env=no_node_env(),  # encrypting needs no node of one's own
    )
    assert_ok(encrypted)
    assert encrypted.stdout == b""
    assert sealed.read_bytes().startswith(b"age-encryption.org/v1\n")
    assert payload not in sealed.read_bytes()

    decrypted = run_pk("keys", "decrypt", str(sealed), env=template_node.env())
    assert_ok(decrypted)
    assert decrypted.stdout == payload


def test_encrypt_armor_writes_ascii_to_stdout_that_decrypts_to_a_file(
    template_node: CliNode, tmp_path: Path
) -> None:
    plain = write(tmp_path / "note.txt", "meet at noon\n")
    encrypted = run_pk("keys", "encrypt", str(plain), "--to", template_node.node_id, "-a")
    assert_ok(encrypted)
    assert encrypted.stdout.startswith(AGE_ARMOR_BEGIN)
    assert encrypted.stdout.isascii()
    assert b"meet at noon" not in encrypted.stdout
    sealed = write(tmp_path / "note.age", encrypted.stdout)

    out = tmp_path / "note.out"
    decrypted = run_pk("keys", "decrypt", str(sealed), "-o", str(out), env=template_node.env())
    assert_ok(decrypted)
    assert decrypted.stdout == b""
    assert out.read_text() == "meet at noon\n"
    assert stat.S_IMODE(out.stat().st_mode) == 0o600


def test_encrypt_to_two_nodes_lets_each_of_them_decrypt(
    template_node: CliNode, other_node: CliNode, tmp_path: Path
) -> None:
    plain = write(tmp_path / "shared.txt", "for both of us")
    encrypted = run_pk(
        "keys",
        "encrypt",
        str(plain),
        "--to",
        template_node.node_id,
        "--to",
        other_node.node_id,
        "--armor",
    )
    assert_ok(encrypted)
    sealed = write(tmp_path / "shared.age", encrypted.stdout)
    for node in (template_node, other_node):
        decrypted = run_pk("keys", "decrypt", str(sealed), env=node.env())
        assert_ok(decrypted, node.password)
        assert decrypted.stdout == b"for both of us"


def test_encrypt_and_decrypt_accept_format_json_and_standard_input(
    template_node: CliNode, tmp_path: Path
) -> None:
    sealed = tmp_path / "in.age"
    encrypted = run_pk(
        "keys",
        "encrypt",
        "-",
        "--to",
        template_node.node_id,
        "-o",
        str(sealed),
        "--format",
        "json",
        input=b"piped secret",
    )
    assert encrypted.returncode == 0, text(encrypted.stderr)
    decrypted = run_pk(
        "keys",
        "decrypt",
        "-",
        "--format",
        "json",
        env=template_node.env(),
        input=sealed.read_bytes(),
    )
    assert decrypted.returncode == 0, text(decrypted.stderr)
    assert b"piped secret" in decrypted.stdout


def test_decrypt_refuses_to_overwrite_an_existing_output_file(
    template_node: CliNode, tmp_path: Path
) -> None:
    plain = write(tmp_path / "p.txt", "new")
    sealed = tmp_path / "p.age"
    assert_ok(
        run_pk("keys", "encrypt", str(plain), "--to", template_node.node_id, "-o", str(sealed))
    )
    existing = write(tmp_path / "p.out", "old")
    result = run_pk("keys", "decrypt", str(sealed), "-o", str(existing), env=template_node.env())
    assert "exists" in assert_error(result, 3)
    assert existing.read_text() == "old"
