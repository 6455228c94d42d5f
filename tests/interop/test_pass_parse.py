"""Reading pass files into the entry layout and writing them back (docs/spec/entries.md, "pass
entries"), without gpg: the parsing, the kept original, and the files `export pass` writes."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from polykey.interop.errors import ImportFailed
from polykey.interop.layout import to_files
from polykey.interop.passstore import fields_of, parse, render, show, store_files

URI = "otpauth://totp/ACME:me?secret=JBSWY3DPEHPK3PXP&issuer=ACME"

# pass file -> the fields it lands as
CASES: list[tuple[bytes, dict[str, bytes]]] = [
    (b"hunter2\n", {"password": b"hunter2"}),
    (b"hunter2", {"password": b"hunter2"}),
    (b"", {"password": b""}),
    (b"\nusername: nobody\n", {"password": b"", "username": b"nobody"}),
    (
        b"pw\nuser: bob\nurl: https://x.example\n",
        {"password": b"pw", "username": b"bob", "url": b"https://x.example"},
    ),
    (
        b"pw\nURL: https://x.example\nLOGIN: bob\n",
        {"password": b"pw", "url": b"https://x.example", "username": b"bob"},
    ),
    (
        b"pw\nUsername: bob\nWebsite: https://w\nurl: https://u\n",
        {"password": b"pw", "username": b"bob", "url": b"https://w", "notes": b"url: https://u\n"},
    ),
    (b"pw\nemail: a@b.c\n", {"password": b"pw", "email": b"a@b.c"}),
    (b"pw\r\nuser: bob\r\nnote\r\n", {"password": b"pw", "username": b"bob", "notes": b"note\n"}),
    (URI.encode() + b"\n", {"otp": URI.encode()}),
    (
        b"pw\nuser: bob\n" + URI.encode(),
        {"password": b"pw", "username": b"bob", "otp": URI.encode()},
    ),
    (
        b"user: bob\npassword: pw\nurl: https://x\n",
        {"username": b"bob", "password": b"pw", "url": b"https://x"},
    ),
    (
        b"pw\n---\nuser: bob\ntotp: jbsw y3dp ehpk 3pxp\n",
        {
            "password": b"pw",
            "username": b"bob",
            "otp": b"otpauth://totp/e?secret=JBSWY3DPEHPK3PXP",
        },
    ),
    (
        b"pw\n\nhttps://not.a.field\nuser:bob\nNotes: kept in notes\npassword: old\n\n",
        {
            "password": b"pw",
            "notes": b"https://not.a.field\nuser:bob\nNotes: kept in notes\npassword: old\n",
        },
    ),
    (b"pw\nPIN: \nx: y\n", {"password": b"pw", "PIN": b"", "x": b"y"}),
    (
        b"pw\ntitle: t\nattachments: a\n",
        {"password": b"pw", "notes": b"title: t\nattachments: a\n"},
    ),
]


@pytest.mark.parametrize(("data", "fields"), CASES, ids=[repr(c[0][:30]) for c in CASES])
def test_a_pass_file_lands_in_fields_and_shows_back_byte_for_byte(
    data: bytes, fields: dict[str, bytes]
) -> None:
    entry = parse("e", data)
    assert entry.fields == fields
    files = dict(entry.fields)
    if entry.original is not None:
        files[".pass"] = entry.original
    assert (entry.original is None) == (render(entry.fields) == data)
    assert show("e", files) == data
    assert store_files({f"e/{k}": v for k, v in files.items()}) == [("e", data)]


def test_an_alias_whose_field_is_set_keeps_its_own_name() -> None:
    fields = fields_of("e", b"pw\nlogin: bob\nuser: robert\nURL: https://u\nsite: https://s\n")
    assert fields == {
        "password": b"pw",
        "username": b"bob",
        "user": b"robert",
        "url": b"https://u",
        "site": b"https://s",
    }


@pytest.mark.parametrize(
    "data", [b"\x00\x01\x02", b"\xff\xfe\nnot utf-8\n", b"text\x00with a NUL\n"], ids=repr
)
def test_a_binary_file_stays_whole(data: bytes) -> None:
    entry = parse("keys/blob", data)
    assert entry.value == data and not entry.fields and entry.original is None
    files, _ = to_files([entry])
    assert files.items == [("keys/blob", data)]
    assert store_files(dict(files.items)) == [("keys/blob", data)]
    # where the path must be a folder, the folder holds the file as .pass
    inside = parse("keys/blob", data, folder=True)
    assert inside.value is None and not inside.fields and inside.original == data
    files, _ = to_files([inside])
    assert files.items == [("keys/blob/.pass", data)]
    assert store_files(dict(files.items)) == [("keys/blob", data)]
    named = parse("keys/password", data)  # named like an entry's file: a folder too
    assert named.original == data


def test_a_changed_field_is_rendered_from_the_fields() -> None:
    data = b"pw\nuser: bob\nurl: https://x\nsome note\n"
    entry = parse("e", data)
    files = {**entry.fields, ".pass": data}
    assert entry.original == data
    assert show("e", {**files, "username": b"bob\n"}) == data  # the same value, from an editor
    changed = {**files, "password": b"new\n"}
    assert show("e", changed) == b"new\nusername: bob\nurl: https://x\nsome note\n"
    added = {**files, "PIN": b"1234"}
    assert show("e", added) == b"pw\nusername: bob\nurl: https://x\nPIN: 1234\nsome note\n"
    removed = {k: v for k, v in files.items() if k != "url"}
    assert show("e", removed) == b"pw\nusername: bob\nsome note\n"


def test_export_takes_a_folder_holding_password_otp_or_pass_as_an_entry() -> None:
    files = {
        "github/password": b"gh\n",
        "github/username": b"me\n",
        "github/recovery codes": b"one\ntwo\n",
        "totp/otp": URI.encode() + b"\n",
        "plain/API_KEY": b"k",
        "loose": b"tok",
    }
    assert store_files(files) == [
        ("github", b"gh\nusername: me\n"),
        ("github/recovery codes", b"one\ntwo\n"),
        ("loose", b"tok"),
        ("plain/API_KEY", b"k"),
        ("totp", URI.encode() + b"\n"),
    ]


def test_raw_keeps_the_first_line_and_the_rest_verbatim() -> None:
    data = b"pw\r\nuser: bob\r\n"
    entry = parse("e", data, raw=True)
    assert entry.fields == {"password": b"pw", "notes": b"user: bob\r\n"}
    assert entry.original == data
    assert show("e", {**entry.fields, ".pass": data}) == data


_LINES = st.sampled_from(
    [
        "pw",
        "",
        " ",
        "user: bob",
        "Login: al",
        "URL: https://x.example/a:b",
        "url: https://second",
        "website: https://w",
        "password: p",
        "secret: s",
        "totp: JBSWY3DPEHPK3PXP",
        "otp: " + URI,
        URI,
        "PIN: 1234",
        "pin: 99",
        "Notes: n",
        "title: t",
        "---",
        "free text",
        "key:no space",
        "a\rb",
        "caf\u00e9: cr\u00e8me",
    ]
)
_TEXT = st.builds(
    lambda lines, ends, crlf: (
        ("\r\n" if crlf else "\n").join(lines).encode()
        + (b"\r\n" if crlf and ends else b"\n" if ends else b"")
    ),
    st.lists(_LINES, max_size=8),
    st.booleans(),
    st.booleans(),
)
_DATA = st.one_of(_TEXT, st.binary(max_size=40))
_NAMES = st.lists(
    st.sampled_from(["a", "A", "password", "OTP", "notes", "user", "title", "url", "attachments"]),
    min_size=1,
    max_size=3,
)


@settings(max_examples=300, deadline=None)
@given(st.dictionaries(_NAMES.map("/".join), _DATA, min_size=1, max_size=6), st.booleans())
def test_any_store_exports_back_byte_for_byte(store: dict[str, bytes], raw: bool) -> None:
    """The promise of docs/spec/entries.md: pass -> pk -> pass gives every file back."""
    folders = {"/".join(n.split("/")[:i]) for n in store for i in range(1, n.count("/") + 1)}
    entries = [parse(n, d, raw=raw, folder=n in folders) for n, d in store.items()]
    try:
        files, _ = to_files(entries, "imported")
    except ImportFailed:  # a file of one entry where another needs a folder: refused, listed
        return
    exported = dict(store_files(dict(files.items)))
    assert exported == {f"imported/{n}": d for n, d in store.items()}


def test_entries_whose_names_differ_by_case_keep_their_names() -> None:
    blob = b"\x00binary"
    entries = [parse("A", b"pw\nuser: x\n"), parse("a", blob), parse("b", blob), parse("B", b"t")]
    files, _ = to_files(entries, "v")
    laid = dict(files.items)
    assert laid["v/a (2)/.pass"] == blob and laid["v/a (2)/title"] == b"a"
    assert laid["v/b"] == blob
    assert dict(store_files(laid)) == {
        "v/A": b"pw\nuser: x\n",
        "v/a": blob,
        "v/b": blob,
        "v/B": b"t",
    }
