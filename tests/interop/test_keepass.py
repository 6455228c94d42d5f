"""KeePass interop with real .kdbx files (made by pykeepass, and by keepassxc-cli where it is
installed): every entry, field, attachment, group and tag comes in, and kdbx -> pk -> kdbx keeps
every secret byte for byte."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path
from typing import Any

import pytest
from pykeepass import PyKeePass, create_database

from tests.cli.helpers import text
from tests.support import run_pk

KDBX_PASSWORD = "kdbx pass phrase"


def ok(result: subprocess.CompletedProcess[bytes]) -> str:
    assert result.returncode == 0, text(result.stderr)
    return text(result.stdout)


def cat(env: dict[str, str], address: str) -> bytes:
    result = run_pk("secrets", "cat", address, env=env)
    assert result.returncode == 0, text(result.stderr)
    return result.stdout


def make_kdbx(
    path: Path, password: str | None = KDBX_PASSWORD, keyfile: Path | None = None
) -> None:
    kp = create_database(str(path), password=password, keyfile=str(keyfile) if keyfile else None)
    work = kp.add_group(kp.root_group, "Work")
    cloud = kp.add_group(work, "Cloud/AWS")
    e = kp.add_entry(
        work,
        "GitHub",
        "bob",
        "s3cret \u00e9\u00e0",
        url="https://github.com",
        notes="line one\nline two\n",
        tags=["dev", "prod"],
        otp="otpauth://totp/GitHub:bob?secret=JBSWY3DPEHPK3PXP&issuer=GitHub",
    )
    e.set_custom_property("API Key", "abc123", protect=True)
    e.set_custom_property("empty", "")
    e.add_attachment(kp.add_binary(bytes(range(256))), "id_ed25519")
    e.add_attachment(kp.add_binary(b"hello"), "readme.txt")
    kp.add_entry(work, "GitHub", "alice", "other", force_creation=True)
    kp.add_entry(cloud, "root", "admin", "rootpw")
    kp.add_entry(kp.root_group, ".git", "u", "dotgit")
    kp.add_entry(kp.root_group, "", "", "untitled secret")
    trashed = kp.add_entry(kp.root_group, "old", "u", "trashed")
    kp.trash_entry(trashed)
    kp.save()


def dump(path: Path, password: str | None, keyfile: Path | None = None) -> list[Any]:
    kp = PyKeePass(str(path), password=password, keyfile=str(keyfile) if keyfile else None)
    bin_uuid = kp.recyclebin_group.uuid if kp.recyclebin_group is not None else None
    out = []
    for e in kp.entries:
        if bin_uuid is not None and e.group.uuid == bin_uuid:
            continue
        out.append(
            (
                tuple(e.group.path),
                e.title or "",
                e.username or "",
                e.password or "",
                e.url or "",
                e.notes or "",
                e.otp or "",
                sorted(e.tags or []),
                sorted((k, v or "") for k, v in e.custom_properties.items()),
                sorted((a.filename, a.binary) for a in e.attachments),
            )
        )
    return sorted(out, key=repr)


@pytest.fixture(scope="module")
def kdbx(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Made once per module (each write pays the file's Argon2); no test changes it."""
    path = tmp_path_factory.mktemp("kdbx") / "source.kdbx"
    make_kdbx(path)
    return path


@pytest.fixture
def secret_file(tmp_path: Path) -> Path:
    path = tmp_path / "kdbx-password"
    path.write_text(KDBX_PASSWORD + "\n")
    return path


def test_a_kdbx_imports_entries_fields_attachments_groups_and_tags(
    kdbx: Path, secret_file: Path, env: dict[str, str]
) -> None:
    result = run_pk(
        "import", "keepass", str(kdbx), "--vault", "kp", "--source-password-file",
        str(secret_file), env=env,
    )  # fmt: skip
    out = ok(result)
    assert "Imported 5 entries" in out
    assert "recycle bin" in text(result.stderr)
    assert cat(env, "kp:Work/GitHub/password") == "s3cret \u00e9\u00e0".encode()
    assert cat(env, "kp:Work/GitHub/username") == b"bob"
    assert cat(env, "kp:Work/GitHub/url") == b"https://github.com"
    assert cat(env, "kp:Work/GitHub/notes") == b"line one\nline two\n"
    assert cat(env, "kp:Work/GitHub/API Key") == b"abc123"
    assert cat(env, "kp:Work/GitHub/empty") == b""
    assert cat(env, "kp:Work/GitHub/attachments/id_ed25519") == bytes(range(256))
    assert cat(env, "kp:Work/GitHub/attachments/readme.txt") == b"hello"
    assert cat(env, "kp:Work/GitHub (2)/password") == b"other"
    assert cat(env, "kp:Work/GitHub (2)/title") == b"GitHub"
    assert cat(env, "kp:Work/Cloud%2FAWS/root/password") == b"rootpw"
    assert cat(env, "kp:%2Egit/password") == b"dotgit"
    assert cat(env, "kp:(untitled)/password") == b"untitled secret"
    code = ok(run_pk("otp", "kp:Work/GitHub/otp", env=env)).strip()
    assert code.isdigit() and len(code) == 6
    tags = ok(run_pk("tags", "list", "--format", "json", env=env))
    assert "dev" in tags and "prod" in tags
    listing = ok(run_pk("secrets", "ls", "-R", "kp", env=env))
    assert "trashed" not in listing and "old" not in listing
    variables = ok(run_pk("secrets", "env", "kp:Work/Cloud%2FAWS/root", env=env))
    assert "rootpw" in variables


def test_kdbx_to_pk_to_kdbx_keeps_every_secret(
    kdbx: Path, secret_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    ok(
        run_pk(
            "import", "keepass", str(kdbx), "--vault", "kp", "--source-password-file",
            str(secret_file), env=env,
        )
    )  # fmt: skip
    again = tmp_path / "again.kdbx"
    new_password = tmp_path / "new-password"
    new_password.write_text("another one\n")
    ok(
        run_pk(
            "export", "keepass", "kp", str(again), "--target-password-file", str(new_password),
            env=env,
        )
    )  # fmt: skip
    assert oct(again.stat().st_mode & 0o777) == "0o600"
    assert dump(again, "another one") == dump(kdbx, KDBX_PASSWORD)
    refused = run_pk(
        "export", "keepass", "kp", str(again), "--target-password-file", str(new_password), env=env
    )
    assert refused.returncode == 61 and "exists" in text(refused.stderr)


def test_a_wrong_kdbx_password_is_a_clear_error_and_nothing_is_written(
    kdbx: Path, env: dict[str, str]
) -> None:
    env = {**env, "PK_SOURCE_PASSWORD": "not it"}
    result = run_pk("import", "keepass", str(kdbx), "--vault", "kp", env=env)
    assert result.returncode == 63
    assert "does not open" in text(result.stderr) and "Traceback" not in text(result.stderr)
    assert run_pk("secrets", "ls", "kp", env=env).returncode == 31


@pytest.mark.parametrize(
    ("content", "words"),
    [
        (b"just some text, not a database\n" * 10, "not a KeePass database"),
        # KeePass 1.x (.kdb) signature: a real format this importer does not read
        (bytes.fromhex("03d9a29a65fb4bb5") + b"\x00" * 200, "version 3 or 4"),
        # a KDBX signature with a version from the future
        (bytes.fromhex("03d9a29a67fb4bb5") + b"\x00\x00\x09\x00" + b"\x00" * 200, "version 3 or 4"),
    ],
)
def test_files_that_are_not_kdbx_3_or_4_are_refused(
    content: bytes, words: str, env: dict[str, str], tmp_path: Path
) -> None:
    path = tmp_path / "bad.kdbx"
    path.write_bytes(content)
    result = run_pk(
        "import", "keepass", str(path), "--vault", "kp", env={**env, "PK_SOURCE_PASSWORD": "x"}
    )
    assert result.returncode == 60, text(result.stderr)
    assert words in text(result.stderr)
    assert run_pk("secrets", "ls", "kp", env=env).returncode == 31


def test_a_database_locked_by_a_key_file_alone(env: dict[str, str], tmp_path: Path) -> None:
    keyfile = tmp_path / "db.key"
    keyfile.write_bytes(bytes(range(64)))
    path = tmp_path / "keyed.kdbx"
    make_kdbx(path, password=None, keyfile=keyfile)
    ok(
        run_pk(
            "import", "keepass", str(path), "--vault", "kp", "--keyfile", str(keyfile),
            "--no-password", env=env,
        )
    )  # fmt: skip
    assert cat(env, "kp:Work/Cloud%2FAWS/root/password") == b"rootpw"


def test_a_vault_made_by_hand_exports_with_unusual_fields_as_attachments(
    env: dict[str, str], tmp_path: Path
) -> None:
    ok(run_pk("vaults", "create", "hand", env=env))
    for path, value in {
        "db/password": b"pw",
        "db/cert.der": b"\x30\x82\x00\xff",
        "top-level": b"loose",
    }.items():
        assert run_pk("secrets", "write", f"hand:{path}", env=env, input=value).returncode == 0
    target = tmp_path / "out.kdbx"
    result = run_pk(
        "export", "keepass", "hand", str(target), env={**env, "PK_TARGET_PASSWORD": "p"}
    )
    ok(result)
    assert "written as an attachment" in text(result.stderr)
    entries = {e[1]: e for e in dump(target, "p")}
    assert entries["db"][3] == "pw"
    assert entries["db"][9] == [("cert.der", b"\x30\x82\x00\xff")]
    assert entries["hand"][8] == [("top-level", "loose")]


@pytest.mark.skipif(shutil.which("keepassxc-cli") is None, reason="keepassxc-cli not installed")
def test_a_kdbx_made_by_keepassxc_imports(env: dict[str, str], tmp_path: Path) -> None:
    path = tmp_path / "xc.kdbx"
    pw = f"{KDBX_PASSWORD}\n{KDBX_PASSWORD}\n".encode()
    subprocess.run(["keepassxc-cli", "db-create", "-p", str(path)], input=pw, check=True)
    subprocess.run(
        ["keepassxc-cli", "add", "-u", "carol", "-p", str(path), "Mail"],
        input=f"{KDBX_PASSWORD}\nmail password\nmail password\n".encode(),
        check=True,
    )
    ok(
        run_pk(
            "import", "keepass", str(path), "--vault", "xc",
            env={**env, "PK_SOURCE_PASSWORD": KDBX_PASSWORD},
        )
    )  # fmt: skip
    assert cat(env, "xc:Mail/password") == b"mail password"
    assert cat(env, "xc:Mail/username") == b"carol"


def test_a_long_export_to_a_terminal_shows_a_progress_bar(
    env: dict[str, str], tmp_path: Path
) -> None:
    import os
    import pty
    import sys

    rows = "name,url,username,password\n" + "".join(
        f"site{i},https://s{i}.example,user{i},pw{i}\n" for i in range(260)
    )
    source = tmp_path / "logins.csv"
    source.write_text(rows)
    ok(run_pk("import", "csv", str(source), "--vault", "web", env=env))
    controller, terminal = pty.openpty()
    target = tmp_path / "web.kdbx"
    proc = subprocess.Popen(
        [sys.executable, "-m", "polykey", "export", "keepass", "web", str(target)],
        env={**env, "PK_TARGET_PASSWORD": "p"},
        stdin=subprocess.DEVNULL,
        stdout=terminal,
        stderr=terminal,
    )
    os.close(terminal)
    seen = b""
    while True:
        try:
            chunk = os.read(controller, 4096)
        except OSError:  # EIO: the other side is closed
            break
        if not chunk:
            break
        seen += chunk
    os.close(controller)
    assert proc.wait(timeout=120) == 0, text(seen)
    assert "Writing" in text(seen) and "100%" in text(seen)
    assert len(dump(target, "p")) == 260
    # not a terminal: no bar
    quiet = run_pk(
        "export", "keepass", "web", str(tmp_path / "b.kdbx"), env={**env, "PK_TARGET_PASSWORD": "p"}
    )
    assert quiet.returncode == 0 and "Writing" not in text(quiet.stderr)


@pytest.mark.skipif(shutil.which("keepassxc-cli") is None, reason="keepassxc-cli not installed")
def test_keepassxc_reads_what_pk_exports(
    kdbx: Path, secret_file: Path, env: dict[str, str], tmp_path: Path
) -> None:
    ok(
        run_pk(
            "import", "keepass", str(kdbx), "--vault", "kp", "--source-password-file",
            str(secret_file), env=env,
        )
    )  # fmt: skip
    target = tmp_path / "for-keepassxc.kdbx"
    ok(run_pk("export", "keepass", "kp", str(target), env={**env, "PK_TARGET_PASSWORD": "xc pw"}))
    shown = subprocess.run(
        ["keepassxc-cli", "show", "-s", "-a", "Password", "-a", "UserName", "-a", "API Key",
         str(target), "Work/GitHub"],
        input=b"xc pw\n",
        capture_output=True,
        check=True,
    ).stdout.decode()  # fmt: skip
    assert shown.splitlines()[-3:] == ["s3cret \u00e9\u00e0", "bob", "abc123"]
    out = tmp_path / "exported-attachment"
    subprocess.run(
        ["keepassxc-cli", "attachment-export", str(target), "Work/GitHub", "id_ed25519",
         str(out)],
        input=b"xc pw\n",
        capture_output=True,
        check=True,
    )  # fmt: skip
    assert out.read_bytes() == bytes(range(256))
