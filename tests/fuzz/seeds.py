"""A few valid inputs per target, to start each corpus from (``scripts/fuzz --seed`` writes them
into tests/fuzz/corpus/<target>/ as ``seed-N``): the fuzzer mutates from the shapes the
parsers accept rather than finding them from nothing."""

from __future__ import annotations

import hashlib
import json
import zlib
from collections.abc import Callable
from typing import Any

from polykey.crypto.kdf import Argon2Params
from polykey.store.header import Header

_TOKEN = "pk1." + "A" * 43
_HEX = "0123456789abcdef" * 2 + "01234567"  # 40 hex digits
_EMPTY_TREE = b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"


def _frame(doc: Any) -> bytes:
    body = json.dumps(doc, separators=(",", ":")).encode()
    return len(body).to_bytes(4, "big") + body


def _request(method: str, params: dict[str, Any], request_id: int | str = 1) -> dict[str, Any]:
    return {"jsonrpc": "2.0", "id": request_id, "method": method, "params": params}


def agent_frame() -> list[bytes]:
    cat = {"vault": "work", "path": "db/password", "raw": True, "token": _TOKEN}
    write = {"vault": "work", "path": "a", "value": {"$b64": "c2VjcmV0"}, "token": _TOKEN}
    return [
        _frame(_request("secrets.cat", cat)),
        _frame(_request("secrets.write", write, "x")),
        _frame(_request("agent.status", {})) + _frame(_request("vaults.list", {"token": 5})),
        _frame({"jsonrpc": "2.0", "method": "agent.unlock", "params": {"password": "pw"}}),
        _frame(_request("x", {"nested": [[{"a": [1, 2.5, None, True]}]]})),
    ]


def peer_frame() -> list[bytes]:
    hello = _frame(_request("peer.hello", {"version": 1}))
    fetch = _frame(_request("vaults.fetch", {"vault": "work", "haves": [_HEX]}, 2))
    push = _request("vaults.receive", {"vault": "w", "head": _HEX, "objects": [{"$b64": "AWE="}]})
    scan_reply = {"jsonrpc": "2.0", "id": 1, "result": {"vaults": [{"id": "v1", "name": "w"}]}}
    error = {"code": -32000, "message": "no", "data": {"exit_code": 51, "hint": "h"}}
    error_reply = {"jsonrpc": "2.0", "id": 1, "error": error}
    blob_reply = {"jsonrpc": "2.0", "id": 1, "result": {"objects": [{"$b64": "AWE="}]}}
    return [
        b"\x00" + hello + fetch,
        b"\x00" + hello + _frame(push) + _frame(_request("fail", {})),
        b"\x00" + _frame(_request("vaults.scan", {})),
        b"\x01" + _frame(scan_reply) + _frame(blob_reply),
        b"\x01" + _frame(error_reply),
    ]


# Builder operations (tests/fuzz/_objects.py): a blob, a tree naming it `password`, a commit of
# that tree on the newest commit held (signed by PEER), and the order byte.
_BLOB = bytes([0, 6]) + b"secret"
_TREE = bytes([1, 1, 0, 0, 0])  # 1 entry: mode 100644, the newest blob, NAMES[0]
# op 2, tree: newest, 1 parent: the newest commit, time, message, signed by PEER (key 1)
_COMMIT_ON_HEAD = bytes([2, 0, 1, 0, 5, 7]) + b"Update." + bytes([1])
# op 2, tree: newest, no parent, time, message, signed by OWNER (key 0)
_COMMIT_ROOT = bytes([2, 0, 0, 5, 7]) + b"Create." + bytes([0])
_SUBTREE = bytes([1, 1, 1, 0, 1])  # 1 entry: mode 040000, the newest tree, NAMES[1] ("db")


def _ops(*ops: bytes) -> bytes:
    return bytes([len(ops)]) + b"".join(ops) + b"\x00\x00"


def _raw_op(kind: int, body: bytes, resign: int) -> bytes:
    return bytes([3, kind]) + len(body).to_bytes(2, "big") + body + bytes([resign])


def peer_methods() -> list[bytes]:
    def params(mode: int, doc: Any, peer: int = 0) -> bytes:
        return bytes([mode, peer]) + json.dumps(doc).encode()

    objects = [{"$b64": "AXRyZWUgMA=="}]
    return [
        params(0, {"version": 1}),
        params(1, {}, 1),
        params(2, {"vault": "work", "haves": [_HEX]}),
        params(2, {"vault": "work", "haves": []}),
        params(3, {"vault": "work", "head": _HEX, "objects": objects}),
        params(4, {"message": "hello"}),
        params(4, {"message": "hi"}, 1),
        bytes([5, 0, 0]) + _ops(_BLOB, _TREE, _COMMIT_ON_HEAD),
        bytes([5, 0, 4]) + _ops(_BLOB, _TREE, _SUBTREE, _COMMIT_ON_HEAD),
        bytes([6, 0, 9]) + b"vaults.rm" + b'{"vault": "work"}',
        bytes([6, 1, 12]) + b"sigchain.get" + b'{"since": 1, "limit": 1000}',
        bytes([6, 1, 16]) + b"sigchain.present" + b'{"entries": [{"payload": "e30"}], "since": 1}',
        bytes([6, 0, 20])
        + b"sigchain.countersign"
        + b'{"draft": {"payload": "", "signatures": []}}',
        bytes([6, 0, 22]) + b"sigchain.countersigned" + b'{"entry": {}}',
    ]


def validate() -> list[bytes]:
    return [
        b"\x00" + _ops(_BLOB, _TREE, _COMMIT_ROOT),
        b"\x00" + _ops(_BLOB, _TREE, _SUBTREE, _COMMIT_ROOT, _BLOB, _TREE, _COMMIT_ON_HEAD),
        b"\x01" + _ops(_BLOB, _TREE, _COMMIT_ON_HEAD),
        b"\x01" + _ops(_TREE, _SUBTREE, _COMMIT_ON_HEAD),
        b"\x00" + _ops(_raw_op(1, b"tree " + _EMPTY_TREE + b"\n\nhi\n", 0)),
        b"\x00" + _ops(_raw_op(2, b"100644 a\x00" + bytes(20), 3), _COMMIT_ROOT),
    ]


def _pack_object(kind: int, raw: bytes, prefix: bytes = b"") -> bytes:
    size = len(raw)
    head = [(kind << 4) | (size & 0x0F)]
    size >>= 4
    while size:
        head[-1] |= 0x80
        head.append(size & 0x7F)
        size >>= 7
    return bytes(head) + prefix + zlib.compress(raw)


def _varint(n: int) -> bytes:
    out = bytearray()
    while True:
        out.append(n & 0x7F | (0x80 if n > 0x7F else 0))
        n >>= 7
        if not n:
            return bytes(out)


def _delta(base: bytes, insert: bytes) -> bytes:
    """Copy all of ``base``, then insert ``insert``."""
    return (
        _varint(len(base))
        + _varint(len(base) + len(insert))
        + bytes([0x80 | 0x10, len(base)])
        + bytes([len(insert)])
        + insert
    )


def _pack(*objects: bytes) -> bytes:
    return b"PACK" + (2).to_bytes(4, "big") + len(objects).to_bytes(4, "big") + b"".join(objects)


def pack_reader() -> list[bytes]:
    blob = _pack_object(3, b"hello\n")
    tree = _pack_object(2, b"100644 a\x00" + bytes(20))
    ofs = _pack_object(6, _delta(b"hello\n", b"world\n"), bytes([len(blob)]))
    held = hashlib.sha1(b"blob 6\x00hello\n").digest()  # tests/fuzz/pack_reader.BASES
    ref = _pack_object(7, _delta(b"hello\n", b"again\n"), held)
    full = _pack(blob, tree, ofs)
    return [
        b"\x01\x00" + full,
        b"\x01\x07" + _pack(ref),
        b"\x01\x00" + _pack(blob, ofs, ref),
        b"\x00\x00" + full + hashlib.sha1(full).digest(),
        b"\x02\x00" + (6).to_bytes(2, "big") + b"hello\n" + _delta(b"hello\n", b"!"),
    ]


def node_header() -> list[bytes]:
    def body(memory: int, iterations: int, lanes: int) -> bytes:
        kdf = Argon2Params(memory, iterations, lanes, bytes(range(16)))
        return Header(1, kdf, bytes(60), bytes(range(60))).encode()[0]

    weak = body(64, 1, 1)
    return [
        b"\x02" + weak,
        b"\x00" + body(64 * 1024, 3, 4),
        b"\x01" + hashlib.sha256(weak).digest() + weak[32:],
        b"\x02" + weak.replace(b'"format":1', b'"format":2'),
    ]


def import_pass() -> list[bytes]:
    sep = b"\x00\xff"
    structured = b"email/work\x00pw\nusername: me\nurl: https://example.com\notpauth://totp/x\n"
    return [
        b"\x00" + structured,
        b"\x00" + b"notes\x00pw\nfree text\nmore\n" + sep + b"bin\x00\x01\x02\x03",
        b"\x01" + b"a/b\x00pw\nkey: v\n",
        b"\x02" + b"site\x00only-a-password",
        b"\x00" + b"x/y\x00p" + sep + b"x/y\x00q\n",
    ]


def import_bitwarden() -> list[bytes]:
    doc = {
        "encrypted": False,
        "folders": [{"id": "f1", "name": "Work/Servers"}],
        "items": [
            {
                "name": "Mail",
                "folderId": "f1",
                "login": {
                    "username": "me",
                    "password": "pw",
                    "totp": "JBSWY3DPEHPK3PXP",
                    "uris": [{"uri": "https://mail.example.com"}, {"uri": "https://m.example"}],
                },
                "notes": "note",
                "fields": [{"name": "pin", "value": "1234", "type": 1}, {"type": 3}],
            },
            {"name": "Card", "card": {"cardholderName": "Me", "number": "4111", "code": 123}},
            {"name": "Me", "identity": {"title": "Dr", "firstName": "A", "licenseNumber": 7}},
            {"name": "Key", "sshKey": {"privateKey": "-----BEGIN", "publicKey": "ssh-ed25519"}},
        ],
    }
    text = json.dumps(doc).encode()
    return [b"\x00" + text, b"\x01" + text, b"\x00" + b'{"encrypted": true, "items": []}']


def import_csv() -> list[bytes]:
    chrome = b"name,url,username,password,note\nMail,https://mail.example,me,pw,n\n"
    firefox = (
        b'"url","username","password","httpRealm","formActionOrigin","guid","timeCreated"\n'
        b'"https://a.example","u","p",,"https://a.example","{1}","1"\n'
    )
    bitwarden = (
        b"folder,favorite,type,name,notes,fields,login_uri,login_username,login_password,"
        b"login_totp\nWork,,login,Mail,n,,https://m.example,me,pw,JBSWY3DPEHPK3PXP\n"
    )
    return [
        b"\x00" + chrome,
        b"\x01" + firefox,
        b"\x00" + bitwarden,
        b"\x02" + b"name,url,username,password\x00Mail,https://m.example,me,pw\n",
    ]


def import_dotenv() -> list[bytes]:
    return [
        b"\x00" + b"# c\nA=1\nexport B = two # comment\nC='single $x'\n",
        b"\x00" + b'D="multi\nline \\n \\" x"\nE=\n',
        b"\x01" + b"bad line\nF=ok\nG='never closed\n",
    ]


def import_json() -> list[bytes]:
    from polykey.interop.formats import write_json

    files = [("db/password", b"secret"), ("bin", b"\xff\x00"), ("notes/a b", "é".encode())]
    text = write_json("work", _HEX, files, {"db/password": ["prod", "db"]})
    return [text.encode(), b'{"format": "polykey-export", "version": 2}']


def import_1pux() -> list[bytes]:
    from tests.fuzz.import_1pux import archive

    item = {
        "item": {
            "uuid": "u1",
            "state": "active",
            "overview": {
                "title": "Mail",
                "url": "https://mail.example",
                "urls": [{"url": "https://m.example"}],
                "tags": ["work/mail"],
            },
            "details": {
                "loginFields": [
                    {"designation": "username", "value": "me", "name": "u"},
                    {"designation": "password", "value": "pw", "name": "p"},
                    {"fieldType": "C", "value": "✓", "name": "remember"},
                ],
                "notesPlain": "n",
                "sections": [
                    {
                        "fields": [
                            {"title": "otp", "value": {"totp": "JBSWY3DPEHPK3PXP"}},
                            {"title": "born", "value": {"date": 0}},
                            {"title": "exp", "value": {"monthYear": 202512}},
                            {"title": "addr", "value": {"address": {"city": "X", "zip": "1"}}},
                            {"title": "doc", "value": {"file": {"documentId": "d1"}}},
                        ]
                    }
                ],
                "documentAttributes": {"documentId": "d2", "fileName": "key.pem"},
            },
        }
    }
    vault = {"attrs": {"name": "Private"}, "items": [item, {"item": {"trashed": True}}]}
    doc = {"accounts": [{"attrs": {"accountName": "Me"}, "vaults": [vault]}]}
    data = json.dumps(doc).encode()
    sep = b"\x00\xff"
    members = sep + b"files/d1__a.txt\x00aaa" + sep + b"files/d2__key.pem\x00-----BEGIN"
    return [
        b"\x00" + data + members,
        b"\x01" + data,
        b"\x02" + archive(data, [("files/d1__a.txt", b"aaa"), ("zfiles/x", b"zz" * 50)]),
    ]


def import_keepass() -> list[bytes]:
    sep = b"\x00\xff"
    entry = (
        b"<Entry><UUID>e1</UUID><String><Key>Title</Key><Value>Mail</Value></String>"
        b"<String><Key>UserName</Key><Value>me</Value></String>"
        b"<String><Key>Password</Key><Value>pw</Value></String>"
        b"<String><Key>PIN</Key><Value>1234</Value></String>"
        b'<Binary><Key>key.pem</Key><Value Ref="0"/></Binary><Tags>work;mail, x</Tags></Entry>'
    )
    binned = (
        b"<Group><UUID>bin</UUID><Name>Recycle Bin</Name><Entry><UUID>e2</UUID></Entry></Group>"
    )
    xml = b"<Group><UUID>r</UUID><Name>Root</Name>" + entry
    xml += b"<Group><UUID>g</UUID><Name>Work</Name>" + entry + b"</Group>" + binned + b"</Group>"
    return [xml + sep + b"-----BEGIN", xml]


def layout() -> list[bytes]:
    sep = b"\x00\xff"
    names = [b"Mail", b"a/b", b"100%", b".git", b"con", b"x.", "é\u0301".encode(), b"\x01"]
    entries = [
        b"Work\x00Mail\x00password=pw\x00username=me\x00@key.pem=k",
        b"Work\x00Mail\x00password=other",
        b"\x00title\x00notes=n",
        b"Work/Mail\x00x\x00password=p",
    ]
    files = [b"Work/Mail/password\x00pw", b"Work/Mail/attachments/k\x00k", b"top\x00t"]
    return [
        b"\x00" + sep.join(names),
        b"\x01" + sep.join(entries),
        b"\x02" + sep.join(files),
        b"\x00" + b"x" * 300,
    ]


SEEDS: dict[str, Callable[[], list[bytes]]] = {
    "agent_frame": agent_frame,
    "peer_frame": peer_frame,
    "peer_methods": peer_methods,
    "node_header": node_header,
    "pack_reader": pack_reader,
    "validate": validate,
    "import_pass": import_pass,
    "import_bitwarden": import_bitwarden,
    "import_csv": import_csv,
    "import_dotenv": import_dotenv,
    "import_json": import_json,
    "import_1pux": import_1pux,
    "import_keepass": import_keepass,
    "layout": layout,
}
