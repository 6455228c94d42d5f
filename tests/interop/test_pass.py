"""pass interop with real gpg and real pass: a store made by `pass` imports exactly, and the
store `pk export pass` writes gives `pass show` the same bytes back."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
from pathlib import Path

import pytest

from tests.cli.helpers import text
from tests.interop.conftest import Gpg, make_gpg
from tests.support import run_pk

pytestmark = pytest.mark.skipif(shutil.which("pass") is None, reason="pass is not installed")

OTP_KEY = "JBSWY3DPEHPK3PXP"
GITHUB_OTP = f"otpauth://totp/GitHub:alice?secret={OTP_KEY}&issuer=GitHub"
BLOB = b"\x89PNG\r\n\x1a\n" + bytes(range(256)) + b"\n\x00end"  # binary, with newlines

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
    # what people write: user: before url:, login:, capitals, email, extra fields, notes
    "email/gmail": b"g-pass\nuser: alice@gmail.com\nurl: https://mail.google.com\n",
    "bank/main": b"s3cr3t!\nLogin: alice99\nURL: https://bank.example/login\nPIN: 4321\n"
    b"Security Question: first pet? Rex\n",
    "forum": b"f0rum\nUsername: carol\nemail: carol@example.org\nWebsite: https://forum.example\n"
    b"Recovery codes:\n1111-2222\n3333-4444\ncreated in 2019\n",
    "windows": b"w1n\r\nUSER: dave\r\nLink: https://win.example\r\nremember the dog\r\n",
    "no-final-newline": b"last\nuser: erin\nurl: https://e.example",
    "browserpass": b"user: frank\npassword: fr4nk\nurl: https://bp.example\n",
    "gopass": b"gp4ss\n---\nusername: gina\nurl: https://gp.example\ntotp: "
    + OTP_KEY.encode()
    + b"\n",
    "notes-between": b"np\nsome words first\nuser: hank\n\nmore words\nurl: https://n.example\n",
    "keys/logo.png": BLOB,
    "keys/blob": b"\xff\xfe not text\n",
    "keys/blob/inside": b"an entry inside a folder named like a binary file\n",
}
# entries made by `pass otp` (written by hand when pass-otp is not installed, as it would)
OTP_ENTRIES: dict[str, bytes] = {
    "totp/github": GITHUB_OTP.encode() + b"\n",  # `pass otp insert totp/github`
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


def has_pass_otp(env: dict[str, str]) -> bool:
    probe = subprocess.run(["pass", "otp", "--help"], env=env, capture_output=True, check=False)
    return probe.returncode == 0 and b"otp insert" in probe.stdout + probe.stderr


def add_otp_entries(gpg: Gpg, store: Path) -> dict[str, bytes]:
    """`pass otp insert` and `pass otp append`, with pass-otp when it is installed; else the
    files are written as pass-otp writes them. Returns the entries' exact bytes."""
    env = pass_env(gpg, store)
    appended_to = b"ap\nuser: ivan\n"
    subprocess.run(
        ["pass", "insert", "--multiline", "otp-append"],
        env=env,
        input=appended_to,
        check=True,
        capture_output=True,
    )
    expected = {**OTP_ENTRIES, "otp-append": appended_to + GITHUB_OTP.encode() + b"\n"}
    if has_pass_otp(env):
        for name in OTP_ENTRIES:
            subprocess.run(
                ["pass", "otp", "insert", name],
                env=env,
                input=GITHUB_OTP.encode() + b"\n",
                check=True,
                capture_output=True,
            )
        subprocess.run(
            ["pass", "otp", "append", "otp-append"],
            env=env,
            input=GITHUB_OTP.encode() + b"\n",
            check=True,
            capture_output=True,
        )
    else:
        for name, value in expected.items():
            subprocess.run(
                ["pass", "insert", "--multiline", "--force", name],
                env=env,
                input=value,
                check=True,
                capture_output=True,
            )
    for name, value in expected.items():
        assert pass_show(gpg, store, name) == value, name
    return expected


ALL: dict[str, bytes] = {}  # ENTRIES and the pass-otp entries, once a store is made


@pytest.fixture
def store(gpg: Gpg, tmp_path: Path) -> Path:
    path = tmp_path / "store"
    make_store(gpg, path, ENTRIES)
    ALL.clear()
    ALL.update(ENTRIES)
    ALL.update(add_otp_entries(gpg, path))
    return path


def otp_code(env: dict[str, str], address: str) -> str:
    code = ok(pk(env, "otp", address)).strip()
    assert code.isdigit() and len(code) == 6, code
    return code


def test_a_store_made_by_pass_imports_into_the_entry_layout(
    gpg: Gpg, store: Path, env: dict[str, str]
) -> None:
    env = gpg.env(env)
    out = ok(pk(env, "import", "pass", str(store), "--vault", "moved"))
    assert f"Imported {len(ALL)} entries" in out
    assert cat(env, "moved:web/github/password") == b"hunter2"
    assert cat(env, "moved:web/mail/password") == b"pw1"
    assert cat(env, "moved:web/mail/username") == b"bob"
    assert cat(env, "moved:web/mail/url") == b"https://mail.example"
    assert cat(env, "moved:web/mail/security question") == b"blue"
    assert cat(env, "moved:web/mail/notes") == b"free text\n\nmore\n"
    assert cat(env, "moved:web/mail/otp").startswith(b"otpauth://totp/mail")
    # fields in any order are fields
    assert cat(env, "moved:odd-order/password") == b"pw"
    assert cat(env, "moved:odd-order/url") == b"https://a.example"
    assert cat(env, "moved:odd-order/username") == b"b"
    # binary content stays one file of exactly those bytes
    assert cat(env, "moved:binary-flat") == ENTRIES["binary-flat"]
    assert cat(env, "moved:binary") == ENTRIES["binary"]
    assert cat(env, "moved:keys/logo.png") == BLOB
    # ... and where the store has a folder of that name, the entry's folder keeps it as .pass
    assert cat(env, "moved:keys/blob/.pass") == ENTRIES["keys/blob"]
    assert cat(env, "moved:keys/blob/inside/password").startswith(b"an entry inside")
    assert cat(env, "moved:no-newline/password") == b"no final newline"
    # an entry and a folder of one name live together
    assert cat(env, "moved:dir/entry/password") == b"parent entry"
    assert cat(env, "moved:dir/entry/child/password") == b"child entry"
    assert cat(env, "moved:caf\u00e9/\u00fcber/password") == "gr\u00fc\u00dfe".encode()
    assert cat(env, "moved:empty-password/password") == b""
    assert cat(env, "moved:crlf/password") == b"pw"
    assert cat(env, "moved:crlf/windows") == b"yes"
    assert otp_code(env, "moved:web/mail/otp")
    assert otp_code(env, "moved:web/mail")  # the entry's folder
    log = ok(pk(env, "vaults", "log", "moved"))
    assert log.count("Import ") == 1


def files_of(env: dict[str, str], address: str) -> dict[str, bytes]:
    """Every secret directly in the folder ``address``, by name."""
    listing = ok(pk(env, "secrets", "ls", address)).splitlines()
    names = [n.rsplit("/", 1)[-1] for n in listing if not n.endswith("/")]  # ls: whole paths
    return {n: cat(env, f"{address}/{n}") for n in names}


# what each entry that people write by hand lands as (.pass is checked separately)
LAYOUT: dict[str, dict[str, bytes]] = {
    "email/gmail": {
        "password": b"g-pass",
        "username": b"alice@gmail.com",
        "url": b"https://mail.google.com",
    },
    "bank/main": {
        "password": b"s3cr3t!",
        "username": b"alice99",
        "url": b"https://bank.example/login",
        "PIN": b"4321",
        "Security Question": b"first pet? Rex",
    },
    "forum": {
        "password": b"f0rum",
        "username": b"carol",
        "email": b"carol@example.org",
        "url": b"https://forum.example",
        "notes": b"Recovery codes:\n1111-2222\n3333-4444\ncreated in 2019\n",
    },
    "windows": {
        "password": b"w1n",
        "username": b"dave",
        "url": b"https://win.example",
        "notes": b"remember the dog\n",
    },
    "no-final-newline": {"password": b"last", "username": b"erin", "url": b"https://e.example"},
    "browserpass": {"password": b"fr4nk", "username": b"frank", "url": b"https://bp.example"},
    "gopass": {
        "password": b"gp4ss",
        "username": b"gina",
        "url": b"https://gp.example",
        "otp": f"otpauth://totp/gopass?secret={OTP_KEY}".encode(),
    },
    "notes-between": {
        "password": b"np",
        "username": b"hank",
        "url": b"https://n.example",
        "notes": b"some words first\n\nmore words\n",
    },
    "totp/github": {"otp": GITHUB_OTP.encode()},
    "otp-append": {"password": b"ap", "username": b"ivan", "otp": GITHUB_OTP.encode()},
    "web/github": {"password": b"hunter2"},
}


def test_entries_as_people_write_them_land_in_the_layout(
    gpg: Gpg, store: Path, env: dict[str, str]
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v"))
    for name, fields in LAYOUT.items():
        found = files_of(env, f"v:{name}")
        original = found.pop(".pass", None)
        assert found == fields, name
        # the file as imported is kept exactly when the fields alone do not give it back
        assert original in (None, ALL[name]), name
    assert ".pass" not in files_of(env, "v:web/github")  # plain entries need no copy
    assert files_of(env, "v:email/gmail")[".pass"] == ALL["email/gmail"]


def test_otp_env_and_run_work_on_imported_entries(
    gpg: Gpg, store: Path, env: dict[str, str]
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v"))
    for entry in ("totp/github", "otp-append", "gopass"):
        assert otp_code(env, f"v:{entry}")
    printed = ok(pk(env, "secrets", "env", "v:email/gmail", "--format", "json"))
    assert json.loads(printed) == {
        "password": "g-pass",
        "username": "alice@gmail.com",
        "url": "https://mail.google.com",
    }
    skipped = ok(pk(env, "secrets", "env", "v:bank/main", "--invalid", "skip", "--format", "json"))
    assert json.loads(skipped) == {
        "password": "s3cr3t!",
        "username": "alice99",
        "url": "https://bank.example/login",
        "PIN": "4321",
    }
    given = pk(
        env, "secrets", "env", "v:windows", "--", "sh", "-c", 'printf "%s|%s" "$username" "$url"'
    )
    assert ok(given) == "dave|https://win.example"
    ran = run_pk(
        "run",
        "--",
        "sh",
        "-c",
        'printf "%s|%s" "$DB_USER" "$DB_PASSWORD"',
        env={
            **env,
            "DB_USER": "pk://v/bank/main/username",
            "DB_PASSWORD": "pk://v/bank/main/password",
        },
    )
    assert ok(ran) == "alice99|s3cr3t!"


def test_cat_of_an_imported_entry_prints_what_pass_show_prints(
    gpg: Gpg, store: Path, env: dict[str, str]
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v"))
    for name in ("email/gmail", "bank/main", "forum", "windows", "gopass", "totp/github"):
        assert cat(env, f"v:{name}") == pass_show(gpg, store, name), name
    assert cat(env, "v:keys/blob") == ENTRIES["keys/blob"]  # the binary one, whole


def test_an_entry_changed_after_the_import_is_exported_from_its_fields(
    gpg: Gpg, store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v"))
    ok(run_pk("secrets", "write", "v:email/gmail/password", env=env, input=b"new-pass\n"))
    ok(run_pk("secrets", "write", "v:forum/username", env=env, input=b"carol\n"))  # same value
    expected = b"new-pass\nusername: alice@gmail.com\nurl: https://mail.google.com\n"
    assert cat(env, "v:email/gmail") == expected
    out = tmp_path / "again"
    ok(pk(env, "export", "pass", "v", "--to", str(out), "--gpg-recipient", gpg.fingerprint))
    assert pass_show(gpg, out, "email/gmail") == expected
    assert pass_show(gpg, out, "forum") == ALL["forum"]  # a final newline changes no value
    assert pass_show(gpg, out, "bank/main") == ALL["bank/main"]


def test_pass_to_pk_to_pass_keeps_every_entry_byte_for_byte(
    gpg: Gpg, store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v"))
    out = tmp_path / "again"
    ok(pk(env, "export", "pass", "v", "--to", str(out), "--gpg-recipient", gpg.fingerprint))
    assert store_names(out) == store_names(store) == set(ALL)
    assert (out / ".gpg-id").read_text().strip() == gpg.fingerprint
    for name, value in ALL.items():
        assert pass_show(gpg, out, name) == pass_show(gpg, store, name) == value, name
    assert oct((out / "web").stat().st_mode & 0o777) == "0o700"


def test_commit_each_gives_one_signed_commit_per_entry(
    gpg: Gpg, store: Path, env: dict[str, str]
) -> None:
    env = gpg.env(env)
    out = ok(pk(env, "import", "pass", str(store), "--vault", "v", "--commit-each"))
    assert f"in {len(ALL)} commits" in out
    log = ok(pk(env, "vaults", "log", "v"))
    assert "Import web/mail from pass." in log
    assert log.count("Import ") == len(ALL)


def test_raw_keeps_each_entry_as_password_and_notes(
    gpg: Gpg, store: Path, env: dict[str, str], tmp_path: Path
) -> None:
    env = gpg.env(env)
    ok(pk(env, "import", "pass", str(store), "--vault", "v", "--raw"))
    assert cat(env, "v:web/mail/password") == b"pw1"
    assert cat(env, "v:web/mail/notes").startswith(b"username: bob\n")
    code = ok(pk(env, "otp", "v:web/mail/notes")).strip()  # the otpauth line among others
    assert code.isdigit() and len(code) == 6
    out = tmp_path / "again"
    ok(pk(env, "export", "pass", "v", "--to", str(out), "--gpg-recipient", gpg.fingerprint))
    for name in ("web/mail", "crlf", "windows", "no-final-newline", "keys/blob", "totp/github"):
        assert pass_show(gpg, out, name) == ALL[name], name


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
