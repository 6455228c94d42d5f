"""`pk import 1password`: 1Password's unencrypted .1pux export (a zip of export.data and files/),
built here in the format 1Password writes (version 3), into the common entry layout."""

from __future__ import annotations

import io
import json
import zipfile
from pathlib import Path
from typing import Any

from tests.cli.helpers import text
from tests.interop.test_formats import OTP_KEY, Pk, otp_code, pk, write  # noqa: F401

ATTRS = {"version": 3, "description": "1Password Unencrypted Export", "createdAt": 1700000000}
DOC_ID = "xk3dn7r5elcmdbqa4o2fomhvdy"
PEM = b"-----BEGIN CERTIFICATE-----\nMIIB\x00\xff binary\n-----END CERTIFICATE-----\n"


def field(title: str, kind: str, value: Any, id_: str = "") -> dict[str, Any]:
    return {
        "title": title,
        "id": id_ or title,
        "value": {kind: value},
        "guarded": False,
        "multiline": False,
        "dontGenerate": False,
        "inputTraits": {
            "keyboard": "default",
            "correction": "default",
            "capitalization": "default",
        },
    }


def item(category: str, title: str, details: dict[str, Any], **overview: Any) -> dict[str, Any]:
    return {
        "uuid": title.lower().replace(" ", "")[:26],
        "favIndex": 0,
        "createdAt": 1619465450,
        "updatedAt": 1619465789,
        "state": "active",
        "categoryUuid": category,
        "details": {"loginFields": [], "notesPlain": "", "sections": [], **details},
        "overview": {"title": title, "subtitle": "", "url": "", "ps": 0, **overview},
    }


LOGIN = item(
    "001",
    "GitHub",
    {
        "loginFields": [
            {
                "value": "octo",
                "id": "",
                "name": "email",
                "fieldType": "E",
                "designation": "username",
            },
            {
                "value": "hunter2",
                "id": "",
                "name": "password",
                "fieldType": "P",
                "designation": "password",
            },
            {"value": "\u2713", "id": "remember", "name": "remember", "fieldType": "C"},
            {"value": "ABC-123", "id": "pin", "name": "pin", "fieldType": "T"},
        ],
        "notesPlain": "recovery codes\nin the safe",
        "sections": [
            {
                "title": "",
                "name": "add more",
                "fields": [
                    field("one-time password", "totp", OTP_KEY, "TOTP_x"),
                    field("Password", "concealed", "an older one"),
                    field("title", "string", "Staff engineer"),
                ],
            },
        ],
    },
    url="https://github.com/login",
    urls=[
        {"label": "", "url": "https://github.com/login"},
        {"label": "api", "url": "https://api.github.com"},
    ],
    tags=["work/servers", "prod"],
)
CARD = item(
    "002",
    "Visa",
    {
        "sections": [
            {
                "title": "",
                "name": "",
                "fields": [
                    field("cardholder name", "string", "Jo Doe", "cardholder"),
                    field("number", "creditCardNumber", "4111111111111111", "ccnum"),
                    field("verification number", "concealed", "123", "cvv"),
                    field("expiry date", "monthYear", 202803, "expiry"),
                    field("valid from", "monthYear", None, "validFrom"),
                ],
            }
        ]
    },
)
IDENTITY = item(
    "004",
    "Me",
    {
        "sections": [
            {
                "title": "Identification",
                "name": "name",
                "fields": [
                    field("first name", "string", "Jo", "firstname"),
                    field("birth date", "date", 946684800, "birthdate"),
                    field("email", "email", {"email_address": "jo@example.com", "provider": None}),
                    field(
                        "address",
                        "address",
                        {
                            "street": "1 Main Road",
                            "city": "Springfield",
                            "country": "us",
                            "zip": "12345",
                            "state": "IL",
                        },
                    ),
                ],
            }
        ]
    },
)
PASSWORD_ITEM = item("005", "Wi-Fi", {"password": "correct horse"})
DOCUMENT = item(
    "006",
    "TLS cert",
    {
        "documentAttributes": {
            "fileName": "cert.pem",
            "documentId": DOC_ID,
            "decryptedSize": len(PEM),
        }
    },
)
NOTE = item("003", "Alarm code", {"notesPlain": "4711"}, tags=["home"])
TRASHED = {**item("001", "Old login", {"password": "gone"}), "trashed": True}
API = item(
    "112",
    "Stripe",
    {
        "sections": [
            {
                "title": "",
                "name": "",
                "fields": [
                    field("credential", "concealed", "sk_live_x"),
                    field("type", "menu", "bearer"),
                ],
            }
        ]
    },
)


def export(vaults: dict[str, list[dict[str, Any]]], *, wrapped: bool = False) -> dict[str, Any]:
    return {
        "accounts": [
            {
                "attrs": {
                    "accountName": "Jo",
                    "name": "Jo",
                    "email": "jo@example.com",
                    "uuid": "ACCOUNT",
                    "domain": "https://my.1password.com/",
                },
                "vaults": [
                    {
                        "attrs": {
                            "uuid": name.lower(),
                            "desc": "",
                            "avatar": "",
                            "name": name,
                            "type": "P",
                        },
                        "items": [{"item": i} for i in items] if wrapped else items,
                    }
                    for name, items in vaults.items()
                ],
            }
        ]
    }


def onepux(doc: dict[str, Any] | bytes, files: dict[str, bytes] | None = None) -> bytes:
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("export.attributes", json.dumps(ATTRS))
        z.writestr("export.data", doc if isinstance(doc, bytes) else json.dumps(doc))
        for name, data in (files or {}).items():
            z.writestr(f"files/{name}", data)
    return buf.getvalue()


FILES = {f"{DOC_ID}__cert.pem": PEM}
EXPECTED = {
    "Personal/GitHub/username": b"octo",
    "Personal/GitHub/password": b"hunter2",
    "Personal/GitHub/pin": b"ABC-123",
    "Personal/GitHub/url": b"https://github.com/login",
    "Personal/GitHub/url-2": b"https://api.github.com",
    "Personal/GitHub/notes": b"recovery codes\nin the safe",
    "Personal/GitHub/otp": f"otpauth://totp/GitHub?secret={OTP_KEY}".encode(),
    "Personal/GitHub/Password (2)": b"an older one",
    "Personal/GitHub/title (2)": b"Staff engineer",
    "Personal/Visa/cardholder name": b"Jo Doe",
    "Personal/Visa/number": b"4111111111111111",
    "Personal/Visa/verification number": b"123",
    "Personal/Visa/expiry date": b"2028-03",
    "Personal/Me/first name": b"Jo",
    "Personal/Me/birth date": b"2000-01-01",
    "Personal/Me/email": b"jo@example.com",
    "Personal/Me/address": b"1 Main Road\nSpringfield IL\n12345\nus",
    "Personal/Wi-Fi/password": b"correct horse",
    "Work/TLS cert/attachments/cert.pem": PEM,
    "Work/Alarm code/notes": b"4711",
    "Work/Stripe/credential": b"sk_live_x",
    "Work/Stripe/type": b"bearer",
}


def test_a_1pux_export_imports_into_the_entry_layout(pk: Pk, tmp_path: Path) -> None:  # noqa: F811
    src = write(
        tmp_path / "export.1pux",
        onepux(
            export(
                {
                    "Personal": [LOGIN, CARD, IDENTITY, PASSWORD_ITEM, TRASHED],
                    "Work": [DOCUMENT, NOTE, API],
                }
            ),
            FILES,
        ),
    )
    r = pk.ok("import", "1password", str(src), "--vault", "op")
    assert "Imported 7 entries (22 secrets)" in text(r.stdout)
    assert pk.contents("op") == EXPECTED  # the trashed item and the checkbox are left out
    _, tags = pk.export("op")
    assert tags == {"Personal/GitHub": ["prod", "work:servers"], "Work/Alarm code": ["home"]}
    otp_code(pk, "op:Personal/GitHub/otp", OTP_KEY)
    env = pk.ok(
        "secrets", "env", "op:Personal/GitHub", "--format", "dotenv", "--invalid", "skip"
    ).stdout.decode()
    assert "password='hunter2'" in env and "username='octo'" in env


def test_a_single_vault_export_has_no_vault_folder_and_old_wrapped_items_read_the_same(
    pk: Pk,  # noqa: F811
    tmp_path: Path,
) -> None:
    src = write(
        tmp_path / "one.1pux", onepux(export({"Private": [NOTE, DOCUMENT]}, wrapped=True), FILES)
    )
    pk.ok("import", "1password", str(src), "--vault", "op-one")
    assert pk.contents("op-one") == {
        "Alarm code/notes": b"4711",
        "TLS cert/attachments/cert.pem": PEM,
    }


def test_a_1pux_from_standard_input(pk: Pk) -> None:  # noqa: F811
    data = onepux(export({"Private": [PASSWORD_ITEM]}))
    pk.ok("import", "1password", "-", "--vault", "op-stdin", input=data)
    assert pk.contents("op-stdin") == {"Wi-Fi/password": b"correct horse"}


def test_an_item_whose_document_is_missing_fails_the_import_unless_skip_bad(
    pk: Pk,  # noqa: F811
    tmp_path: Path,
) -> None:
    src = write(tmp_path / "missing.1pux", onepux(export({"Private": [NOTE, DOCUMENT]})))
    err = pk.fails(60, "import", "1password", str(src), "--vault", "op-missing")
    assert "TLS cert" in err and "cert.pem" in err and "not in the archive" in err
    assert "op-missing" not in pk.vaults()
    r = pk.ok("import", "1password", str(src), "--vault", "op-missing", "--skip-bad")
    assert "TLS cert" in text(r.stderr)
    assert pk.contents("op-missing") == {"Alarm code/notes": b"4711"}


def test_files_that_are_not_1pux_exports_are_refused_and_write_nothing(
    pk: Pk,  # noqa: F811
    tmp_path: Path,
) -> None:
    no_data = io.BytesIO()
    with zipfile.ZipFile(no_data, "w") as z:
        z.writestr("export.attributes", json.dumps(ATTRS))
    cases = {
        "plain.1pux": (b"just text", "not a zip archive"),
        "nodata.1pux": (no_data.getvalue(), "no export.data"),
        "notjson.1pux": (onepux(b"{nope"), "not JSON"),
        "noaccounts.1pux": (onepux({"items": []}), "no accounts"),
    }
    for name, (data, message) in cases.items():
        src = write(tmp_path / name, data)
        err = pk.fails(60, "import", "1password", str(src), "--vault", "op-bad")
        assert message in err, (name, err)
        assert "pk: hint:" in err
    assert "op-bad" not in pk.vaults()


def test_a_zip_bomb_is_refused_before_it_is_expanded(pk: Pk, tmp_path: Path) -> None:  # noqa: F811
    buf = io.BytesIO()
    with zipfile.ZipFile(buf, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("export.data", json.dumps(export({"Private": [NOTE]})))
        z.writestr(f"files/{DOC_ID}__cert.pem", b"\x00" * (64 * 1024 * 1024))
    assert len(buf.getvalue()) < 1024 * 1024
    src = write(tmp_path / "bomb.1pux", buf.getvalue())
    err = pk.fails(60, "import", "1password", str(src), "--vault", "op-bomb")
    assert "expands" in err
    assert "op-bomb" not in pk.vaults()


def test_hostile_1pux_files_fail_cleanly(pk: Pk, tmp_path: Path) -> None:  # noqa: F811
    """Odd or hostile content is a clear error naming the item (exit 60), never a crash."""
    corrupt = io.BytesIO()
    with zipfile.ZipFile(corrupt, "w", zipfile.ZIP_DEFLATED) as z:
        z.writestr("export.data", json.dumps(export({"Private": [DOCUMENT]})))
        z.writestr(f"files/{DOC_ID}__cert.pem", b"some bytes to compress " * 100)
    data = bytearray(corrupt.getvalue())
    start = data.index(b"files/") + len(f"files/{DOC_ID}__cert.pem")
    data[start + 5 : start + 25] = b"\xff" * 20  # the member's deflate stream, damaged
    far_date = item(
        "004", "Far", {"sections": [{"title": "", "fields": [field("born", "date", 10**30)]}]}
    )
    cases = {
        "nested": (onepux(b"[" * 100_000 + b"]" * 100_000), "not JSON"),
        "items": (onepux({"accounts": [{"attrs": {}, "vaults": [{"items": 5}]}]}), "not a list"),
        "date": (onepux(export({"Private": [far_date]})), "Private/Far"),
        "deflate": (bytes(data), "TLS cert"),
    }
    for name, (content, message) in cases.items():
        src = write(tmp_path / f"{name}.1pux", content)
        err = pk.fails(60, "import", "1password", str(src), "--vault", "op-hostile")
        assert message in err, (name, err)
    assert "op-hostile" not in pk.vaults()


def test_one_document_named_by_many_items_is_unpacked_once(pk: Pk, tmp_path: Path) -> None:  # noqa: F811
    docs = [
        {**DOCUMENT, "overview": {**DOCUMENT["overview"], "title": f"cert {i}"}} for i in range(50)
    ]
    src = write(tmp_path / "shared.1pux", onepux(export({"Private": docs}), FILES))
    pk.ok("import", "1password", str(src), "--vault", "op-shared")
    files = pk.contents("op-shared")
    assert len(files) == 50 and set(files.values()) == {PEM}
