"""`pk import` and `pk export` of the plain-file formats, end to end with real `pk` processes:
Bitwarden's unencrypted JSON, browser CSV exports, .env files, Polykey's own JSON, and a plain
git repository. One node per test module (per xdist worker); every test uses its own vaults.

The commands under test always run as `pk` processes. Setting up vaults (binary values, tags)
and some checks (which vaults exist, a vault's commits and contents) open the node file in this
process instead: it is the same node file, read without the CLI, and much cheaper than a process.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import os
import shutil
import stat
import struct
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest

from polykey.node import Node
from tests.cli.helpers import CliNode, Result, bootstrap, text
from tests.support import run_pk

# --- the node, and small helpers to run `pk` on it -------------------------------------------


@dataclass(frozen=True)
class Pk:
    """`pk` on one node, with a private runtime folder so no other test's agent is found."""

    node: CliNode
    env: dict[str, str]

    def __call__(self, *args: str, input: bytes = b"") -> Result:
        return run_pk(*args, env=self.env, input=input)

    def ok(self, *args: str, input: bytes = b"") -> Result:
        r = self(*args, input=input)
        assert r.returncode == 0, (args, text(r.stderr))
        assert b"Traceback" not in r.stderr
        return r

    def fails(self, exit_code: int, *args: str, input: bytes = b"") -> str:
        """Run a command that must fail with ``exit_code``; returns its error text (stderr)."""
        r = self(*args, input=input)
        err = text(r.stderr)
        assert r.returncode == exit_code, (args, r.returncode, err)
        assert "Traceback" not in err
        assert "pk: error: " in err, err
        assert r.stdout == b"", r.stdout
        return err[err.index("pk: error: ") :]  # after any warnings

    def json(self, *args: str, input: bytes = b"") -> dict[str, Any]:
        r = self.ok(*args, "--format", "json", input=input)
        doc = json.loads(r.stdout)
        assert isinstance(doc, dict)
        return doc

    def vaults(self) -> set[str]:
        """The node's vaults, read from the node file in this process (cheaper than `pk`)."""
        with self.opened() as n:
            return {v.name for v in n.vaults.all()}

    def commits(self, vault: str) -> list[str]:
        """Commit messages of a vault, newest first, read in this process."""
        with self.opened() as n:
            return [c.message for c in n.vaults.open(vault).log()]

    def log(self, vault: str) -> list[str]:
        """Commit messages of a vault, newest first, through `pk vaults log`."""
        return [c["message"] for c in self.json("vaults", "log", vault)["commits"]]

    def files(self, vault: str) -> set[str]:
        """Every secret path of a vault."""
        entries = self.json("secrets", "ls", vault, "-R")["entries"]
        return {e["path"] for e in entries if e["kind"] == "secret"}

    def cat(self, vault: str, paths: list[str]) -> dict[str, bytes]:
        """The values of many secrets through one `pk secrets cat --format json`."""
        docs = self.json("secrets", "cat", *[f"{vault}:{p}" for p in paths])["secrets"]
        out: dict[str, bytes] = {}
        for path, d in zip(paths, docs, strict=True):
            assert d["address"] == f"{vault}:{path}"
            out[path] = d["value"].encode() if "value" in d else base64.b64decode(d["base64"])
        return out

    def export(self, vault: str) -> tuple[dict[str, bytes], dict[str, list[str]]]:
        """Every secret and tag of a vault, through `pk export json`."""
        doc = json.loads(self.ok("export", "json", vault).stdout)
        files: dict[str, bytes] = {}
        for s in doc["secrets"]:
            files[s["path"]] = s["text"].encode() if "text" in s else base64.b64decode(s["base64"])
        return files, doc["tags"]

    def contents(self, vault: str) -> dict[str, bytes]:
        """Every secret of a vault with its value, read in this process."""
        with self.opened() as n:
            v = n.vaults.open(vault)
            return {e.path: v.read(e.path) for e in v.ls("", recursive=True) if e.kind == "secret"}

    def opened(self) -> Node:
        """The node file opened in this process: for set-up and checks, never under test."""
        return Node.open(self.node.path, self.node.password.encode(), allow_weak=True)


@pytest.fixture(scope="module")
def pk(tmp_path_factory: pytest.TempPathFactory) -> Pk:
    base = tmp_path_factory.mktemp("formats")
    node = bootstrap(base / "node" / "node.pk")
    runtime = base / "run"
    runtime.mkdir(mode=0o700)
    return Pk(node, node.env(PK_RUNTIME_DIR=str(runtime)))


def write(path: Path, content: str | bytes) -> Path:
    path.write_bytes(content.encode() if isinstance(content, str) else content)
    return path


def make_vault(pk: Pk, name: str, files: dict[str, bytes], tags: dict[str, list[str]]) -> None:
    with pk.opened() as n:
        v = n.vaults.create(name)
        for path, value in files.items():
            v.write(path, value)
        for path, ts in tags.items():
            v.set_tags(path, ts, [])


def totp(secret_b32: str, at: float) -> str:
    """RFC 6238 (SHA-1, 6 digits, 30 s), computed here independently of Polykey."""
    key = base64.b32decode(secret_b32 + "=" * (-len(secret_b32) % 8))
    mac = hmac.new(key, struct.pack(">Q", int(at) // 30), hashlib.sha1).digest()
    offset = mac[-1] & 0x0F
    code = (struct.unpack(">I", mac[offset : offset + 4])[0] & 0x7FFFFFFF) % 1_000_000
    return f"{code:06d}"


def otp_code(pk: Pk, address: str, secret_b32: str) -> None:
    before = time.time()
    code = pk.ok("otp", address).stdout.decode().strip()
    after = time.time()
    assert code in {totp(secret_b32, before), totp(secret_b32, after)}, code


# --- Bitwarden ---------------------------------------------------------------------------------

OTP_KEY = "JBSWY3DPEHPK3PXP"
GITHUB_TOTP = f"otpauth://totp/GitHub:octo?secret={OTP_KEY}&issuer=GitHub"

IDENTITY: dict[str, str | None] = {
    "title": None,
    "firstName": "Jo",
    "middleName": None,
    "lastName": "Doe",
    "address1": "1 Main Road",
    "address2": None,
    "address3": None,
    "city": "Springfield",
    "state": None,
    "postalCode": "12345",
    "country": "US",
    "company": None,
    "email": "jo@example.com",
    "phone": None,
    "ssn": "078-05-1120",
    "username": "jodoe",
    "passportNumber": "P1234567",
    "licenseNumber": None,
}


def bw_item(n: int, type_: int, name: str, folder: str | None, **rest: Any) -> dict[str, Any]:
    """An item the way Bitwarden writes it, with its bookkeeping keys."""
    item: dict[str, Any] = {
        "passwordHistory": None,
        "revisionDate": "2024-05-01T10:00:00.000Z",
        "creationDate": "2024-05-01T10:00:00.000Z",
        "deletedDate": None,
        "id": f"0000000{n}-aaaa-bbbb-cccc-000000000000",
        "organizationId": None,
        "folderId": folder,
        "type": type_,
        "reprompt": 0,
        "name": name,
        "notes": None,
        "favorite": False,
        "collectionIds": None,
    }
    item.update(rest)
    return item


def bitwarden_export(identity: dict[str, str | None] = IDENTITY) -> dict[str, Any]:
    login = {
        "fido2Credentials": [],
        "uris": [
            {"match": None, "uri": "https://github.com/login"},
            {"match": 0, "uri": "https://gist.github.com"},
            {"match": 3, "uri": "https://api.github.com"},
        ],
        "username": "octo",
        "password": "gh-pass, \"quoted\" 'x'",
        "totp": GITHUB_TOTP,
    }
    fields = [
        {"name": "pin", "value": "1234", "type": 0, "linkedId": None},
        {"name": "recovery code", "value": "abcd-efgh", "type": 1, "linkedId": None},
        {"name": "admin", "value": "true", "type": 2, "linkedId": None},
        {"name": "alias", "value": None, "type": 3, "linkedId": 100},
    ]
    return {
        "encrypted": False,
        "folders": [
            {"id": "f-work", "name": "Work"},
            {"id": "f-ab", "name": "a/b"},
        ],
        "items": [
            bw_item(1, 1, "GitHub", "f-work", notes="main account\nsecond line", login=login,
                    fields=fields),
            bw_item(2, 1, "Mail", "f-ab", login={
                "fido2Credentials": [], "uris": None, "username": "me@example.com",
                "password": "mail-pass", "totp": "jbsw y3dp ehpk 3pxp",
            }),
            bw_item(3, 2, "Shopping list", None, notes="milk\neggs", secureNote={"type": 0}),
            bw_item(4, 3, "Visa", None, card={
                "cardholderName": "Jo Doe", "brand": "Visa", "number": "4111111111111111",
                "expMonth": "12", "expYear": "2030", "code": "123",
            }),
            bw_item(5, 4, "Me", None, identity=identity),
            bw_item(6, 1, "GitHub", "f-work", login={
                "uris": [], "username": "octo-work", "password": "second", "totp": None,
            }),
        ],
    }  # fmt: skip


def test_bitwarden_import_writes_the_entry_layout(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / "bitwarden.json", json.dumps(bitwarden_export(), indent=2))
    r = pk.ok("import", "bitwarden", str(src), "--vault", "bw")
    assert "renamed Work/GitHub -> Work/GitHub (2)" in text(r.stderr)
    expected = {
        "Work/GitHub/username": b"octo",
        "Work/GitHub/password": b"gh-pass, \"quoted\" 'x'",
        "Work/GitHub/otp": GITHUB_TOTP.encode(),
        "Work/GitHub/url": b"https://github.com/login",
        "Work/GitHub/url-2": b"https://gist.github.com",
        "Work/GitHub/url-3": b"https://api.github.com",
        "Work/GitHub/notes": b"main account\nsecond line",
        "Work/GitHub/pin": b"1234",
        "Work/GitHub/recovery code": b"abcd-efgh",
        "Work/GitHub/admin": b"true",
        "Work/GitHub (2)/username": b"octo-work",
        "Work/GitHub (2)/password": b"second",
        "Work/GitHub (2)/title": b"GitHub",
        "a/b/Mail/username": b"me@example.com",
        "a/b/Mail/password": b"mail-pass",
        "a/b/Mail/otp": f"otpauth://totp/Mail?secret={OTP_KEY}".encode(),
        "Shopping list/notes": b"milk\neggs",
        "Visa/cardholder": b"Jo Doe",
        "Visa/brand": b"Visa",
        "Visa/number": b"4111111111111111",
        "Visa/exp-month": b"12",
        "Visa/exp-year": b"2030",
        "Visa/code": b"123",
        "Me/first-name": b"Jo",
        "Me/last-name": b"Doe",
        "Me/address1": b"1 Main Road",
        "Me/city": b"Springfield",
        "Me/postal-code": b"12345",
        "Me/country": b"US",
        "Me/email": b"jo@example.com",
        "Me/ssn": b"078-05-1120",
        "Me/username": b"jodoe",
        "Me/passport-number": b"P1234567",
    }
    # exactly these files: no linked field (type 3), no empty fields, nothing else
    assert pk.files("bw") == set(expected)
    assert pk.cat("bw", sorted(expected)) == expected
    otp_code(pk, "bw:Work/GitHub/otp", OTP_KEY)
    otp_code(pk, "bw:a/b/Mail/otp", OTP_KEY)  # a bare base32 key became an otpauth URI


def test_bitwarden_identity_with_a_title_imports(pk: Pk, tmp_path: Path) -> None:
    export = bitwarden_export({**IDENTITY, "title": "Mx"})
    src = write(tmp_path / "bitwarden.json", json.dumps(export))
    pk.ok("import", "bitwarden", str(src), "--vault", "bw-title")
    assert pk.cat("bw-title", ["Me/first-name"]) == {"Me/first-name": b"Jo"}


def test_bitwarden_account_encrypted_export_is_refused(pk: Pk, tmp_path: Path) -> None:
    doc = {
        "encrypted": True,
        "encKeyValidation_DO_NOT_EDIT": "2.AAAA|BBBB|CCCC",
        "folders": [{"id": "f", "name": "2.DDDD|EEEE|FFFF"}],
        "items": [bw_item(1, 1, "2.GGGG|HHHH|IIII", "f", login={"password": "2.JJJJ|KKKK"})],
    }
    src = write(tmp_path / "encrypted.json", json.dumps(doc))
    err = pk.fails(60, "import", "bitwarden", str(src), "--vault", "bw-enc")
    assert "encrypted" in err.splitlines()[0]
    assert "unencrypted" in err  # the hint says how to get a file we can read
    assert "bw-enc" not in pk.vaults()


def test_bitwarden_password_protected_export_is_refused_as_encrypted(
    pk: Pk, tmp_path: Path
) -> None:
    doc = {
        "encrypted": True,
        "passwordProtected": True,
        "salt": "c2FsdHNhbHRzYWx0",
        "kdfType": 0,
        "kdfIterations": 600000,
        "kdfMemory": None,
        "kdfParallelism": None,
        "encKeyValidation_DO_NOT_EDIT": "2.AAAA|BBBB|CCCC",
        "data": "2.DDDD|EEEE|FFFF",
    }
    src = write(tmp_path / "protected.json", json.dumps(doc))
    err = pk.fails(60, "import", "bitwarden", str(src), "--vault", "bw-prot")
    assert "bw-prot" not in pk.vaults()
    assert "encrypted" in err.splitlines()[0], err


def test_bitwarden_malformed_json_writes_nothing(pk: Pk, tmp_path: Path) -> None:
    full = json.dumps(bitwarden_export())
    src = write(tmp_path / "truncated.json", full[: len(full) // 2])
    err = pk.fails(60, "import", "bitwarden", str(src), "--vault", "bw-bad")
    assert "not JSON" in err
    other = write(tmp_path / "other.json", json.dumps({"format": "polykey-export", "secrets": []}))
    pk.fails(60, "import", "bitwarden", str(other), "--vault", "bw-bad")
    assert "bw-bad" not in pk.vaults()


# --- CSV ---------------------------------------------------------------------------------------


def test_csv_chrome_export_with_quoted_fields(pk: Pk, tmp_path: Path) -> None:
    src = write(
        tmp_path / "Chrome Passwords.csv",
        "name,url,username,password,note\r\n"
        'GitHub,https://github.com/login,octo,"pa,ss","multi\r\nline, note"\r\n'
        'bank.example,https://bank.example/,me,"he said ""hi""",\r\n',
    )
    pk.ok("import", "csv", str(src), "--vault", "chrome")
    expected = {
        "GitHub/url": b"https://github.com/login",
        "GitHub/username": b"octo",
        "GitHub/password": b"pa,ss",
        "GitHub/notes": b"multi\r\nline, note",
        "bank.example/url": b"https://bank.example/",
        "bank.example/username": b"me",
        "bank.example/password": b'he said "hi"',
    }
    assert pk.contents("chrome") == expected


FIREFOX = (
    '"url","username","password","httpRealm","formActionOrigin","guid","timeCreated",'
    '"timeLastUsed","timePasswordChanged"\n'
    '"https://accounts.example.com/signin?x=1","fox","ff1",,"https://accounts.example.com",'
    '"{0a1b}","1700000000000","1700000000001","1700000000002"\n'
    '"http://localhost:8080","dev","ff2","Realm",,"{0a1c}","1","2","3"\n'
    '"https://accounts.example.com","fox2","ff3",,"https://accounts.example.com",'
    '"{0a1d}","1","2","3"\n'
)


def test_csv_firefox_export_names_entries_by_host(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / "logins.csv", FIREFOX)
    r = pk.ok("import", "csv", str(src), "--vault", "firefox:logins")
    assert "renamed accounts.example.com -> logins/accounts.example.com (2)" in text(r.stderr)
    expected = {
        "logins/accounts.example.com/url": b"https://accounts.example.com/signin?x=1",
        "logins/accounts.example.com/username": b"fox",
        "logins/accounts.example.com/password": b"ff1",
        "logins/localhost/url": b"http://localhost:8080",
        "logins/localhost/username": b"dev",
        "logins/localhost/password": b"ff2",
        "logins/accounts.example.com (2)/url": b"https://accounts.example.com",
        "logins/accounts.example.com (2)/username": b"fox2",
        "logins/accounts.example.com (2)/password": b"ff3",
        "logins/accounts.example.com (2)/title": b"accounts.example.com",
    }
    # Firefox's bookkeeping columns (realm, guid, times) are not kept
    assert pk.contents("firefox") == expected


def test_csv_same_name_at_the_vault_top_keeps_both(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / "logins.csv", FIREFOX)
    pk.ok("import", "csv", str(src), "--vault", "firefox-top")
    files = pk.contents("firefox-top")
    assert files.get("accounts.example.com/password") == b"ff1"
    assert files.get("accounts.example.com (2)/password") == b"ff3"


def test_entries_named_like_windows_devices_are_kept_and_round_trip(pk: Pk, tmp_path: Path) -> None:
    """A vault never holds `con` or `C:x` (stock git on Windows could not check it out); an
    entry of that name is kept by percent-encoding its first character, and exports as itself."""
    src = write(
        tmp_path / "devices.csv",
        "name,url,username,password\nCON,https://con.example,u1,p1\nC:drive,,u2,p2\nBank ,,u3,p3\n",
    )
    pk.ok("import", "csv", str(src), "--vault", "devices")
    files = pk.contents("devices")
    assert files["%43ON/password"] == b"p1" and files["%43:drive/password"] == b"p2"
    assert files["Bank%20/password"] == b"p3"
    assert not any(path.endswith("/title") for path in files)
    out = tmp_path / "devices.json"
    pk.ok("export", "json", "devices", "--to", str(out))
    pk.ok("import", "json", str(out), "--vault", "devices-again")
    assert pk.contents("devices-again") == files


def test_csv_without_header_with_columns(pk: Pk, tmp_path: Path) -> None:
    src = write(
        tmp_path / "plain.csv",
        "Site,https://site.example,u1,p1,Shared/Team,ignored,4321\n"
        "Other,https://other.example,u2,p2,,ignored,\n"
        "Totp,https://t.example,u3,p3,,x,\n",
    )
    columns = "name,url,username,password,folder,skip,pin"
    pk.ok("import", "csv", str(src), "--vault", "headerless", "--columns", columns)
    expected = {
        "Shared/Team/Site/url": b"https://site.example",
        "Shared/Team/Site/username": b"u1",
        "Shared/Team/Site/password": b"p1",
        "Shared/Team/Site/pin": b"4321",
        "Other/url": b"https://other.example",
        "Other/username": b"u2",
        "Other/password": b"p2",
        "Totp/url": b"https://t.example",
        "Totp/username": b"u3",
        "Totp/password": b"p3",
    }
    assert pk.contents("headerless") == expected


def test_csv_bad_row_writes_nothing_unless_skip_bad(pk: Pk, tmp_path: Path) -> None:
    src = write(
        tmp_path / "bad.csv",
        "name,url,username,password,note\n"
        'A,https://a.example,ua,pa,"note, with\nnewline"\n'
        "B,https://b.example,ub\n"
        "C,https://c.example,uc,pc,\n",
    )
    err = pk.fails(60, "import", "csv", str(src), "--vault", "csv-bad")
    assert "row 3" in err and "3 columns, expected 5" in err, err
    assert "--skip-bad" in err  # the hint
    assert "csv-bad" not in pk.vaults()

    r = pk.ok("import", "csv", str(src), "--vault", "csv-bad", "--skip-bad")
    assert "skipped row 3: 3 columns, expected 5" in text(r.stderr)
    assert "Skipped 1" in text(r.stdout)
    assert pk.contents("csv-bad") == {
        "A/url": b"https://a.example",
        "A/username": b"ua",
        "A/password": b"pa",
        "A/notes": b"note, with\nnewline",
        "C/url": b"https://c.example",
        "C/username": b"uc",
        "C/password": b"pc",
    }


def test_csv_without_password_column_is_refused_with_a_hint(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / "nopw.csv", "name,url,username\nA,https://a.example,u\n")
    err = pk.fails(60, "import", "csv", str(src), "--vault", "csv-nopw")
    first, hint = err.splitlines()
    assert "no password column" in first
    assert hint.startswith("pk: hint: ") and "--columns" in hint
    assert "csv-nopw" not in pk.vaults()


# --- .env --------------------------------------------------------------------------------------

DOTENV = r"""# database settings
export DB_USER=admin   # trailing comment
DB_HOST = db.internal
URL=https://x.example/#frag
DQ="tab\there \"quoted\" \$HOME back\\slash"
MULTI="first line
second line\nthird"
SQ='literal \n $HOME "x" # not a comment'
EMPTY=
DB_USER=root
"""


def test_dotenv_import(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / ".env", DOTENV)
    pk.ok("import", "dotenv", str(src), "--vault", "dotenv:app/prod")
    expected = {
        "app/prod/DB_USER": b"root",  # a later assignment wins, as in a shell
        "app/prod/DB_HOST": b"db.internal",
        "app/prod/URL": b"https://x.example/#frag",
        "app/prod/DQ": b'tab\there "quoted" $HOME back\\slash',
        "app/prod/MULTI": b"first line\nsecond line\nthird",
        "app/prod/SQ": b'literal \\n $HOME "x" # not a comment',
        "app/prod/EMPTY": b"",
    }
    assert pk.contents("dotenv") == expected


def test_dotenv_malformed_line_writes_nothing(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / "bad.env", "A=1\n# fine\nB='never closed\nC=3\n")
    err = pk.fails(60, "import", "dotenv", str(src), "--vault", "dotenv-bad")
    assert "line 3" in err and "never closed" in err, err
    src = write(tmp_path / "bad2.env", "A=1\nthis is not an assignment\n")
    err = pk.fails(60, "import", "dotenv", str(src), "--vault", "dotenv-bad")
    assert "line 2" in err, err
    assert "dotenv-bad" not in pk.vaults()


ROUND_TRIP = {
    "NEWLINE": b"line one\nline two\n",
    "QUOTES": b"it's \"double\" and 'single'",
    "DOLLAR": b"$HOME ${PATH} $(id) `id`",
    "BACKSLASH": b"C:\\dir\\new\\n \\\\ end\\",
    "ALL": b"a'b\"c$d\\e\nf\tg # h",
    "SPACES": b"  lead and trail  ",
    "HASH": b"#not-a-comment",
    "UNICODE": "héllo ✓".encode(),
    "EMPTY": b"",
}


def test_dotenv_export_round_trips(pk: Pk, tmp_path: Path) -> None:
    make_vault(pk, "env-src", {**ROUND_TRIP, "sub/NESTED": b"x", "not-a-name": b"y"}, {})
    r = pk.ok("export", "dotenv", "env-src")
    assert "left out 2 secrets" in text(r.stderr)
    pk.ok("import", "dotenv", "-", "--vault", "env-dst", input=r.stdout)
    assert pk.contents("env-dst") == ROUND_TRIP

    # --to: a new 0600 file, with a warning; never over an existing file
    out = tmp_path / "out.env"
    r2 = pk.ok("export", "dotenv", "env-src", "--to", str(out))
    assert r2.stdout == b""
    assert "plaintext" in text(r2.stderr) and str(out) in text(r2.stderr)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    assert out.read_bytes() == r.stdout
    write(out, "KEEP=1\n")
    pk.fails(3, "export", "dotenv", "env-src", "--to", str(out))
    assert out.read_bytes() == b"KEEP=1\n"


def test_dotenv_round_trip_keeps_carriage_returns(pk: Pk) -> None:
    values = {"CRLF": b"-----BEGIN X-----\r\nAAAA\r\n-----END X-----\r\n", "CR": b"a\rb"}
    make_vault(pk, "env-cr", values, {})
    r = pk.ok("export", "dotenv", "env-cr")
    pk.ok("import", "dotenv", "-", "--vault", "env-cr2", input=r.stdout)
    assert pk.contents("env-cr2") == values


# --- Polykey's JSON ----------------------------------------------------------------------------


def test_json_export_import_round_trip(pk: Pk, tmp_path: Path) -> None:
    binary = bytes(range(256)) + b"\x00\xff"
    files = {
        "db/password": b"hunter2\n",
        "db/user": b"admin",
        "keys/blob.bin": binary,
        "top": "ünïcode ✓".encode(),
        "empty": b"",
    }
    tags = {"db/password": ["prod", "team-a"], "keys/blob.bin": ["k"]}
    make_vault(pk, "json-src", files, tags)
    out = tmp_path / "export.json"
    r = pk.ok("export", "json", "json-src", "--to", str(out))
    assert "plaintext" in text(r.stderr)
    assert stat.S_IMODE(out.stat().st_mode) == 0o600
    doc = json.loads(out.read_text())
    assert {s["path"]: "base64" in s for s in doc["secrets"]}["keys/blob.bin"]

    pk.ok("import", "json", str(out), "--vault", "json-dst")
    assert pk.export("json-dst") == (files, tags)
    tagged = pk.json("secrets", "ls", "--tag", "team-a")["entries"]
    assert {(e["vault"], e["path"]) for e in tagged} == {
        ("json-src", "db/password"),
        ("json-dst", "db/password"),
    }


# --- import rules ------------------------------------------------------------------------------

CHROME = "name,url,username,password,note\nGitHub,https://github.com,octo,old-pass,old note\n"


def test_existing_paths_are_refused_unless_overwrite(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / "first.csv", CHROME)
    pk.ok("import", "csv", str(src), "--vault", "rules")
    before = pk.log("rules")
    assert len(before) == 2 and before[0].startswith("Import 1 entry from"), before  # one commit

    again = write(
        tmp_path / "again.csv",
        "name,url,username,password\nNew,https://new.example,n,new\n"
        "GitHub,https://github.com,octo2,new-pass\n",
    )
    err = pk.fails(34, "import", "csv", str(again), "--vault", "rules")
    assert "rules:GitHub/" in err and "--overwrite" in err, err
    assert pk.commits("rules") == before

    pk.ok("import", "csv", str(again), "--vault", "rules", "--overwrite")
    log = pk.log("rules")
    assert log[1:] == before and log[0].startswith("Import 2 entries"), log
    got = pk.cat("rules", ["GitHub/password", "GitHub/username", "New/password"])
    assert got == {
        "GitHub/password": b"new-pass",
        "GitHub/username": b"octo2",
        "New/password": b"new",
    }
    # the whole entry is replaced: the old entry's other fields do not linger
    assert sorted(k for k in pk.contents("rules") if k.startswith("GitHub/")) == [
        "GitHub/password",
        "GitHub/url",
        "GitHub/username",
    ]


def test_a_dry_run_makes_the_same_checks_as_the_import(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / "first.csv", CHROME)
    pk.ok("import", "csv", str(src), "--vault", "dry2")
    before = pk.commits("dry2")
    err = pk.fails(34, "import", "csv", str(src), "--vault", "dry2", "--dry-run")
    assert "--overwrite" in err
    out = pk.ok("import", "csv", str(src), "--vault", "dry2", "--dry-run", "--overwrite").stdout
    assert b"nothing written" in out
    assert pk.commits("dry2") == before


def test_dry_run_lists_paths_and_writes_nothing(pk: Pk, tmp_path: Path) -> None:
    src = write(tmp_path / "chrome.csv", CHROME + "Bank,https://bank.example,me,pw,\n")
    r = pk.ok("import", "csv", str(src), "--vault", "dry:imported", "--dry-run")
    lines = text(r.stdout).splitlines()
    assert lines[:-1] == [
        "imported/Bank/password",
        "imported/Bank/url",
        "imported/Bank/username",
        "imported/GitHub/notes",
        "imported/GitHub/password",
        "imported/GitHub/url",
        "imported/GitHub/username",
    ]
    assert "nothing written" in lines[-1]
    assert "dry" not in pk.vaults()

    doc = pk.json("import", "bitwarden", "-", "--vault", "dry", "--dry-run",
                  input=json.dumps(bitwarden_export()).encode())  # fmt: skip
    assert "Work/GitHub (2)/title" in doc["paths"] and doc["entries"] == 6
    assert "dry" not in pk.vaults()


def test_failed_import_leaves_no_new_vault(pk: Pk, tmp_path: Path) -> None:
    # The tags name an invalid path: found only while writing, after the vault was created.
    doc = {
        "format": "polykey-export",
        "version": 1,
        "vault": "x",
        "commit": "0" * 40,
        "secrets": [{"path": "ok", "text": "value"}],
        "tags": {"../outside": ["t"]},
    }
    src = write(tmp_path / "bad-tags.json", json.dumps(doc))
    pk.fails(3, "import", "json", str(src), "--vault", "fail-new")
    assert "fail-new" not in pk.vaults()

    # into an existing vault: the vault stays, unchanged
    make_vault(pk, "fail-old", {"keep": b"kept"}, {})
    before = pk.commits("fail-old")
    pk.fails(3, "import", "json", str(src), "--vault", "fail-old")
    assert pk.commits("fail-old") == before  # every change of a vault is a commit


# --- git ---------------------------------------------------------------------------------------


def git(*args: str, stderr: bool = False) -> str:
    """Git's standard output (and its standard error, where git writes signature checks)."""
    r = subprocess.run(["git", *args], capture_output=True, check=True)
    return r.stdout.decode() + (r.stderr.decode() if stderr else "")


def worktree(root: Path) -> dict[str, bytes]:
    out: dict[str, bytes] = {}
    for path in root.rglob("*"):
        rel = path.relative_to(root).as_posix()
        if path.is_file() and not rel.startswith(".git/"):
            out[rel] = path.read_bytes()
    return out


def test_export_git_needs_yes(pk: Pk, tmp_path: Path) -> None:
    make_vault(pk, "git-no", {"a": b"1"}, {})
    dest = tmp_path / "repo"
    err = pk.fails(2, "export", "git", "git-no", str(dest))
    assert "plaintext" in err and "--yes" in err.splitlines()[1]
    assert not dest.exists()


def test_export_git_writes_a_signed_repository(pk: Pk, tmp_path: Path) -> None:
    if shutil.which("git") is None:
        pytest.skip("git is not installed")
    files = {"db/password": b"hunter2\n", "db/user": b"admin", "api/token": b"tok\x00\xff"}
    make_vault(pk, "git-src", files, {"api/token": ["prod"]})
    pk.ok("secrets", "rm", "git-src:db/user")
    files.pop("db/user")
    dest = tmp_path / "repo"
    r = pk.ok("export", "git", "git-src", str(dest), "--yes")
    assert "plaintext" in text(r.stdout)

    commits = pk.json("vaults", "log", "git-src")["commits"]
    lines = git("-C", str(dest), "log", "--format=%H %s").splitlines()
    assert lines == [f"{c['id']} {c['message']}" for c in commits]
    assert git("-C", str(dest), "status", "--porcelain") == ""
    tree = worktree(dest)
    assert ".polykey-tags" in tree  # the vault's tags file is part of its tree
    tree.pop(".polykey-tags")
    assert tree == files
    assert stat.S_IMODE(dest.stat().st_mode) & 0o077 == 0

    if shutil.which("ssh-keygen") is None:
        pytest.skip("ssh-keygen (openssh-client) is missing: git cannot check SSH signatures")
    shown = git("-C", str(dest), "log", "--show-signature", "-1", stderr=True)
    assert f'Good "git" signature for {pk.node.node_id} with ED25519 key' in shown, shown
    assert set(git("-C", str(dest), "log", "--format=%G?").split()) == {"G"}

    # an existing, non-empty folder is refused
    pk.fails(61, "export", "git", "git-src", str(dest), "--yes")


def test_export_git_to_a_relative_folder_verifies(pk: Pk, tmp_path: Path) -> None:
    if shutil.which("git") is None or shutil.which("ssh-keygen") is None:
        pytest.skip("git and ssh-keygen (openssh-client) are needed")
    make_vault(pk, "git-rel", {"a": b"1"}, {})
    r = subprocess.run(
        [sys.executable, "-m", "polykey", "export", "git", "git-rel", "rel-repo", "--yes"],
        env=pk.env,
        cwd=tmp_path,
        capture_output=True,
        check=False,
    )
    assert r.returncode == 0, text(r.stderr)
    assert (tmp_path / "rel-repo" / "a").read_bytes() == b"1"
    shown = git("-C", str(tmp_path / "rel-repo"), "log", "--format=%G?")
    assert shown.split() == ["G"] * len(shown.split()), shown
    assert os.path.isabs(
        git("-C", str(tmp_path / "rel-repo"), "config", "gpg.ssh.allowedSignersFile").strip()
    )
