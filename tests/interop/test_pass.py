"""pass interop with real gpg and real pass: a store made by `pass` imports exactly, and the
store `pk export pass` writes gives `pass show` the same bytes back."""

from __future__ import annotations

import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import text
from tests.interop.conftest import Gpg, make_gpg
from tests.support import run_pk

pytestmark = pytest.mark.skipif(shutil.which("pass") is None, reason="pass is not installed")

# name -> exact bytes of the pass file, as `pass insert -m` writes what it is given
ENTRIES: dict[str, bytes] = {
    "web/github": b"hunter2\n",
    "web/mail": b"pw1\nusername: bob\nurl: https://mail.example\nsecurity question: blue\n"
    b"otpauth://totp/mail?secret=JBSWY3DPEHPK3PXP\nfree text\n\nmore\n",
    "odd-order": b"pw\nurl: https://a.example\nusername: b\n",
    "bank/cards/visa": b"1234 5678\nnotes without fields\n",
    "binary": bytes(range(256)) * 3,
    "binary-flat": bytes(b for b in range(256) if b != 10),
    "no-newline": b"no final newline",
    "dir/entry": b"parent entry\n",
    "dir/entry/child": b"child entry\n",
    "50% off": b"percent\n",
    "caf\u00e9/\u00fcber": "gr\u00fc\u00dfe\n".encode(),
    "empty-password": b"\nusername: nobody\n",
    "crlf": b"pw\r\nwindows: yes\r\n",
}


def pass_env(gpg: Gpg, store: Path) -> dict[str, str]:
    return gpg.env(PASSWORD_STORE_DIR=str(store), PASSWORD_STORE_GPG_OPTS="--trust-model always")


def make_store(gpg: Gpg, store: Path, entries: dict[str, bytes]) -> None:
    env = pass_env(gpg, store)
    subprocess.run(["pass", "init", gpg.fingerprint], env=env, check=True, capture_output=True)
    for name, value in entries.items():
        subprocess.run(
            ["pass", "insert", "--multiline", name],
            env=env,
            input=value,
            check=True,
            capture_output=True,
        )


def pass_show(gpg: Gpg, store: Path, name: str) -> bytes:
    return subprocess.run(
        ["pass", "show", name], env=pass_env(gpg, store), check=True, capture_output=True
    ).stdout


def store_names(store: Path) -> set[str]:
    return {
        str(p.relative_to(store))[: -len(".gpg")]
        for p in store.rglob("*.gpg")
        if ".git" not in p.parts
    }


def pk(env: dict[str, str], *args: str) -> subprocess.CompletedProcess[bytes]:
    return run_pk(*args, env=env)


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, text(result.stderr)
    return text(result.stdout)


def cat(env: dict[str, str], address: str) -> bytes:
    result = pk(env, "secrets", "cat", address)
    assert result.returncode == 0, text(result.stderr)
    return result.stdout


@pytest.fixture
def store(gpg: Gpg, tmp_path: Path) -> Path:
    path = tmp_path / "store"
    make_store(gpg, path, ENTRIES)
    return path


def test_a_store_made_by_pass_imports_into_the_entry_layout(
    gpg: Gpg, store: Path, env: dict[str, str]
) -> None:
    env = gpg.env(env)
    out = ok(pk(env, "import", "pass", str(store), "--vault", "moved"))
    assert f"Imported {len(ENTRIES)} entries" in out
    assert cat(env, "moved:web/github/password") == b"hunter2"
    assert cat(env, "moved:web/mail/password") == b"pw1"
    assert cat(env, "moved:web/mail/username") == b"bob"
    assert cat(env, "moved:web/mail/url") == b"https://mail.example"
    assert cat(env, "moved:web/mail/security question") == b"blue"
    assert cat(env, "moved:web/mail/notes") == b"free text\n\nmore\n"
    assert cat(env, "moved:web/mail/otp").startswith(b"otpauth://totp/mail")
    # fields out of the canonical order: kept verbatim as notes, so nothing is reordered
    assert cat(env, "moved:odd-order/password") == b"pw"
    assert cat(env, "moved:odd-order/notes") == b"url: https://a.example\nusername: b\n"
    # content without any newline stays one file of exactly those bytes
    assert cat(env, "moved:binary-flat") == ENTRIES["binary-flat"]
    binary = ENTRIES["binary"]
    first = binary.index(b"\n")
    assert cat(env, "moved:binary/password") == binary[:first]
    assert cat(env, "moved:binary/notes") == binary[first + 1 :]
    assert cat(env, "moved:no-newline") == b"no final newline"
    # an entry and a folder of one name live together
    assert cat(env, "moved:dir/entry/password") == b"parent entry"
    assert cat(env, "moved:dir/entry/child/password") == b"child entry"
    assert cat(env, "moved:caf\u00e9/\u00fcber/password") == "gr\u00fc\u00dfe".encode()
    assert cat(env, "moved:empty-password/password") == b""
    code = ok(pk(env, "otp", "moved:web/mail/otp")).strip()
    assert code.isdigit() and len(code) == 6
    assert ok(pk(env, "otp", "moved:web/mail")).strip().isdigit()  # the entry's folder
    log = ok(pk(env, "vaults", "log", "moved"))
    assert log.count("Import ") == 1


def test_pass_to_pk_to_pass_keeps_every_entry_byte_for_byte(
    gpg: Gpg, store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v"))
    out = tmp_path / "again"
    ok(pk(env, "export", "pass", "v", "--to", str(out), "--gpg-recipient", gpg.fingerprint))
    assert store_names(out) == store_names(store) == set(ENTRIES)
    assert (out / ".gpg-id").read_text().strip() == gpg.fingerprint
    for name, value in ENTRIES.items():
        assert pass_show(gpg, out, name) == pass_show(gpg, store, name) == value, name
    assert oct((out / "web").stat().st_mode & 0o777) == "0o700"


def test_commit_each_gives_one_signed_commit_per_entry(
    gpg: Gpg, store: Path, env: dict[str, str]
) -> None:
    env = gpg.env(env)
    out = ok(pk(env, "import", "pass", str(store), "--vault", "v", "--commit-each"))
    assert f"in {len(ENTRIES)} commits" in out
    log = ok(pk(env, "vaults", "log", "v"))
    assert "Import web/mail from pass." in log
    assert log.count("Import ") == len(ENTRIES)


def test_raw_keeps_each_entry_as_password_and_notes(
    gpg: Gpg, store: Path, env: dict[str, str]
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v", "--raw"))
    assert cat(env, "v:web/mail/password") == b"pw1"
    assert cat(env, "v:web/mail/notes").startswith(b"username: bob\n")
    code = ok(pk(env, "otp", "v:web/mail/notes")).strip()  # the otpauth line among others
    assert code.isdigit() and len(code) == 6


def test_a_store_whose_key_is_missing_fails_clearly_and_writes_nothing(
    gpg: Gpg, store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    stranger = make_gpg(tmp_path / "stranger", "Stranger <s@polykey.invalid>")
    try:
        result = pk(stranger.env(env), "import", "pass", str(store), "--vault", "v")
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=stranger.env(), check=False)
    assert result.returncode == 60
    err = text(result.stderr)
    assert "no secret key" in err and "gpg --import" in err
    assert "Traceback" not in err
    listing = ok(pk(env, "vaults", "list"))
    assert "v\t" not in listing and not listing.startswith("v")


def test_skip_bad_imports_the_readable_entries_and_lists_the_others(
    gpg: Gpg, env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    make_store(gpg, store, {"fine": b"readable\n"})
    other = make_gpg(tmp_path / "other", "Other <o@polykey.invalid>")
    try:
        blob = subprocess.run(
            ["gpg", "--batch", "--encrypt", "--trust-model", "always", "-r", other.fingerprint],
            env=other.env(),
            input=b"for someone else\n",
            capture_output=True,
            check=True,
        ).stdout
    finally:
        subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=other.env(), check=False)
    (store / "locked.gpg").write_bytes(blob)
    env = gpg.env(env)
    refused = pk(env, "import", "pass", str(store), "--vault", "v")
    assert refused.returncode == 60 and "locked" in text(refused.stderr)
    assert pk(env, "secrets", "ls", "v").returncode != 0  # no vault was made
    done = pk(env, "import", "pass", str(store), "--vault", "v", "--skip-bad")
    assert done.returncode == 0, text(done.stderr)
    assert "skipped locked" in text(done.stderr)
    assert cat(env, "v:fine/password") == b"readable"


def test_a_folder_that_is_not_a_password_store_is_refused(
    env: dict[str, str], tmp_path: Path, gpg: Gpg
) -> None:
    folder = tmp_path / "plain"
    folder.mkdir()
    (folder / "x.gpg").write_bytes(b"not really")
    result = pk(gpg.env(env), "import", "pass", str(folder), "--vault", "v")
    assert result.returncode == 60
    assert "not a password-store" in text(result.stderr)
    assert "pass init" in text(result.stderr)


def test_symlinks_in_a_store_are_not_followed(
    gpg: Gpg, env: dict[str, str], tmp_path: Path
) -> None:
    store = tmp_path / "store"
    make_store(gpg, store, {"real": b"inside\n"})
    outside = tmp_path / "outside"
    make_store(gpg, outside, {"secret": b"outside the store\n"})
    os.symlink(outside, store / "link")
    os.symlink(outside / "secret.gpg", store / "file.gpg")
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v"))
    listing = ok(pk(env, "secrets", "ls", "-R", "v"))
    assert "real/password" in listing
    assert "link" not in listing and "file" not in listing


def test_export_refuses_an_unknown_recipient_and_a_used_folder(
    gpg: Gpg, store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v"))
    target = tmp_path / "out"
    unknown = pk(env, "export", "pass", "v", "--to", str(target), "--gpg-recipient", "nobody@x")
    assert unknown.returncode == 61 and "no public key" in text(unknown.stderr)
    assert not target.exists()
    target.mkdir()
    (target / "keep").write_text("mine")
    used = pk(env, "export", "pass", "v", "--to", str(target), "--gpg-recipient", gpg.fingerprint)
    assert used.returncode == 61 and "not an empty folder" in text(used.stderr)
    assert sorted(p.name for p in target.iterdir()) == ["keep"]


def test_a_vault_made_by_hand_exports_to_a_store_pass_reads(
    gpg: Gpg, env: dict[str, str], tmp_path: Path
) -> None:
    env = gpg.env(env)
    ok(pk(env, "vaults", "create", "hand"))
    for path, value in {
        "github/password": b"gh",
        "github/username": b"me",
        "github/recovery codes": b"one\ntwo\n",
        "loose-token": b"tok",
    }.items():
        assert run_pk("secrets", "write", f"hand:{path}", env=env, input=value).returncode == 0
    out = tmp_path / "store"
    ok(pk(env, "export", "pass", "hand", "--to", str(out), "--gpg-recipient", gpg.fingerprint))
    assert pass_show(gpg, out, "github") == b"gh\nusername: me\n"
    assert pass_show(gpg, out, "github/recovery codes") == b"one\ntwo\n"
    assert pass_show(gpg, out, "loose-token") == b"tok"
