"""`pk node salvage NEW_PATH`: a new node of everything a damaged node file still authenticates.

One small node (two vaults, secrets, vault and secret tags, a grant, a known address) is made
once; each test damages a copy of it through SQLite, as a flipped byte on a disk would.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import os
import re
import shutil
import sqlite3
from pathlib import Path
from typing import Any

import pytest

from polykey.errors import NodeDamaged
from polykey.ids import encode_node_id
from polykey.keys.root import RootKey
from polykey.network.graph import Address
from polykey.node import FAST_INSECURE_KDF, NODE_KEYS, ROOT_SEED, Node
from polykey.salvage import FIXED, RootKeyLost, salvage
from polykey.store import header as hdr
from polykey.store.nodefile import read_header
from polykey.store.records import Namespace, RecordKeys
from polykey.vaults.objects import object_id, objects_ns
from polykey.vaults.registry import NAMES, REGISTRY
from tests.cli.helpers import assert_error, json_stdout, text
from tests.support import PASSWORD, pk_env, run_pk

PW = PASSWORD.encode()
WIFI = b"wifi password"
BIG = bytes(range(256)) * (4096 + 300)  # just over 1 MiB: a blob kept in parts
OTHER = encode_node_id(RootKey.from_seed(bytes(range(32))).node_id)


@pytest.fixture(scope="module")
def original(tmp_path_factory: pytest.TempPathFactory) -> Path:
    path = tmp_path_factory.mktemp("original") / "node.pk"
    node, _ = Node.bootstrap(path, PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        work = node.vaults.create("work", tags=["team"])
        work.write("db/password", b"hunter2")
        work.write("api/key", b"k-123")
        work.write("big.bin", BIG)
        work.set_tags("api/key", ["prod"], [])
        home = node.vaults.create("home")
        home.write("wifi", WIFI)
        other = RootKey.from_seed(bytes(range(32))).node_id
        node.acl.grant(work.id, other, ["pull"])
        node.graph.add(other, Address("127.0.0.1", 1314))
    assert [p.name for p in path.parent.iterdir()] == ["node.pk"]
    return path


@pytest.fixture
def damaged(original: Path, tmp_path: Path) -> Path:
    folder = tmp_path / "old"
    folder.mkdir()
    path = folder / "node.pk"
    shutil.copyfile(original, path)
    return path


def contents(path: Path) -> dict[str, Any]:
    """Everything a user reads back: NodeId, vaults with their ids, tags, secrets, secret tags,
    history and grants, and the known addresses."""
    with Node.open(path, PW, allow_weak=True) as node:
        vaults = {}
        for info in node.vaults.all():
            vault = node.vaults.open(info.name)
            secrets = {
                e.path: vault.read(e.path) for e in vault.ls(recursive=True) if e.kind == "secret"
            }
            vaults[info.name] = {
                "id": info.id,
                "created": info.created,
                "tags": info.tags,
                "secrets": secrets,
                "secret_tags": vault.tags(),
                "log": [c.id for c in vault.log()],
                "grants": node.acl.grants(info.id),
            }
        return {
            "node_id": encode_node_id(node.node_id),
            "vaults": vaults,
            "graph": {k: str(v) for k, v in node.graph.all().items()},
        }


def record_keys(path: Path) -> RecordKeys:
    header = read_header(path, allow_weak=True)
    data_key = hdr.unwrap_with_password(header, PW, allow_weak=True)
    assert data_key is not None
    return RecordKeys(data_key)


def flip(path: Path, table: str, where: str = "1", params: tuple[Any, ...] = ()) -> None:
    """Flip one bit in the middle of the sealed column of exactly one row."""
    column = "body" if table == "header" else "sealed"
    with contextlib.closing(sqlite3.connect(path)) as db:
        rows = db.execute(f"SELECT {column} FROM {table} WHERE {where}", params).fetchall()
        assert len(rows) == 1, rows
        value = bytearray(rows[0][0])
        value[len(value) // 2] ^= 0x10
        db.execute(f"UPDATE {table} SET {column} = ? WHERE {where}", (bytes(value), *params))
        db.commit()


def flip_record(path: Path, ns: Namespace, key: bytes) -> None:
    keys = record_keys(path)
    ns_id = keys.ns_id(ns.name)
    flip(path, "record", "ns = ? AND name = ?", (ns_id, keys.rec_id(ns_id, key)))


def flip_manifest(path: Path, ns: Namespace) -> None:
    flip(path, "manifest", "ns = ?", (record_keys(path).ns_id(ns.name),))


def vault_id(path: Path, name: str) -> str:
    return str(contents(path)["vaults"][name]["id"])


def digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in folder.iterdir()}


# --- a flipped byte in the root record -------------------------------------------------------


def test_a_damaged_root_record_fails_every_command_and_salvage_brings_all_back(
    original: Path, damaged: Path, tmp_path: Path
) -> None:
    expected = contents(original)
    flip(damaged, "root")
    before = digest(damaged.parent)
    env = pk_env(damaged, PK_PASSWORD=PASSWORD)
    for command in (("vaults", "list"), ("secrets", "cat", "work:db/password")):
        assert_error(run_pk(*command, env=env), 14)
    check = run_pk("node", "check", env=env)
    assert check.returncode == 14
    assert "`pk node salvage NEW_PATH`" in text(check.stderr)

    new = tmp_path / "new" / "node.pk"
    result = run_pk("node", "salvage", str(new), "--format", "json", env=env)
    assert result.returncode == 0, text(result.stderr)
    doc = json_stdout(result)
    assert doc["ok"] is True
    assert doc["node_id"] == expected["node_id"]
    assert doc["lost"] == [] and doc["lost_count"] == 0
    assert doc["rebuilt"] == ["the root record failed authentication"]
    assert doc["incomplete_vaults"] == [] and doc["damage"] == []
    salvaged = doc["salvaged"]
    assert salvaged["refs"] == 2 and salvaged["registry"] == 4
    assert salvaged["vault_objects"] > 10 and salvaged["other"] >= 4
    assert sum(doc["rollback_unchecked"].values()) >= 8  # every mutable record: no root
    assert digest(damaged.parent) == before, "the damaged file was changed"

    assert contents(new) == expected
    assert [p.name for p in new.parent.iterdir()] == ["node.pk"]
    assert new.stat().st_mode & 0o777 == 0o600
    whole = run_pk("node", "check", env=pk_env(new, PK_PASSWORD=PASSWORD))
    assert whole.returncode == 0, text(whole.stderr)
    human = run_pk("node", "salvage", str(tmp_path / "again.pk"), env=env)
    assert human.returncode == 0
    out = text(human.stdout)
    assert "Rollback protection could not be checked" in out
    assert "Every record authenticated; the new node is whole." in out


# --- a flipped byte in one git object and in one manifest ------------------------------------


def test_a_damaged_object_and_manifest_lose_exactly_that_object(
    original: Path, damaged: Path, tmp_path: Path
) -> None:
    expected = contents(original)
    home = vault_id(original, "home")
    blob = bytes.fromhex(object_id(3, WIFI).decode())
    flip_record(damaged, objects_ns(home), blob)
    flip_manifest(damaged, REGISTRY)
    env = pk_env(damaged, PK_PASSWORD=PASSWORD)

    new = tmp_path / "new.pk"
    result = run_pk("node", "salvage", str(new), "--format", "json", env=env)
    assert result.returncode == 14, text(result.stderr)
    error = json.loads(text(result.stderr))["error"]
    assert "1 record(s) could not be salvaged" in error["message"]
    assert "1 vault(s) have an incomplete history" in error["message"]
    assert "pk backup restore" in error["hint"]
    doc = json_stdout(result)
    assert doc["ok"] is False
    assert doc["lost"] == [
        {
            "namespace": f"vault/{home}/objects",
            "key": blob.hex(),
            "problem": "failed authentication",
            "count": 1,
        }
    ]
    assert doc["rebuilt"] == ["the manifest of vaults/registry failed authentication"]
    assert doc["rollback_unchecked"] == {"vaults/registry": 2}
    [incomplete] = doc["incomplete_vaults"]
    assert incomplete["vault"] == "home"
    assert any(blob.hex() in p and "missing" in p for p in incomplete["problems"])

    got = contents(original)  # the original is untouched; the new node has all but the blob
    assert got == expected
    with Node.open(new, PW, allow_weak=True) as node:
        assert encode_node_id(node.node_id) == expected["node_id"]
        work = node.vaults.open("work")
        assert work.read("db/password") == b"hunter2"
        assert work.read("big.bin") == BIG
        assert work.tags() == expected["vaults"]["work"]["secret_tags"]
        assert node.vaults.info("home").tags == []
        assert [d.kind for d in node.check()] == ["history"]
    human = run_pk("node", "salvage", str(tmp_path / "again.pk"), env=env)
    out = text(human.stdout)
    assert f"vault/{home}/objects (vault home)/{blob.hex()}: failed authentication" in out
    assert "home: 1 problem(s)" in out


def test_a_damaged_manifest_alone_loses_nothing(damaged: Path, tmp_path: Path) -> None:
    flip_manifest(damaged, NAMES)
    report = salvage(damaged, tmp_path / "new.pk", PW, allow_weak=True)
    assert report.ok and not report.lost
    assert report.rebuilt == ["the manifest of vaults/names failed authentication"]
    assert dict(report.unchecked) == {"vaults/names": 2}
    assert sorted(contents(tmp_path / "new.pk")["vaults"]) == ["home", "work"]


# --- what salvage refuses ------------------------------------------------------------------------


def test_a_damaged_header_is_one_clear_line_and_nothing_is_written(
    damaged: Path, tmp_path: Path
) -> None:
    flip(damaged, "header")
    new = tmp_path / "new.pk"
    result = run_pk("node", "salvage", str(new), env=pk_env(damaged, PK_PASSWORD=PASSWORD))
    message = assert_error(result, 14)
    errors = [line for line in text(result.stderr).splitlines() if line.startswith("pk: error:")]
    assert len(errors) == 1
    assert "header" in message and "nothing can be salvaged without it" in message
    assert not new.exists()
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


def test_an_existing_new_path_is_refused_before_the_password(damaged: Path, tmp_path: Path) -> None:
    flip(damaged, "root")
    taken = tmp_path / "taken.pk"
    taken.write_bytes(b"keep me")
    result = run_pk("node", "salvage", str(taken), env=pk_env(damaged))  # no password given
    assert str(taken) in assert_error(result, 11)
    assert taken.read_bytes() == b"keep me"
    itself = run_pk("node", "salvage", str(damaged), env=pk_env(damaged))
    assert "damaged node file itself" in assert_error(itself, 3)


def test_a_lost_root_key_record_stops_before_writing(damaged: Path, tmp_path: Path) -> None:
    flip_record(damaged, NODE_KEYS, ROOT_SEED)
    flip(damaged, "root")
    with pytest.raises(RootKeyLost, match="another NodeId"):
        salvage(damaged, tmp_path / "new.pk", PW, allow_weak=True)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["old"]


# --- versions, the registry, unknown namespaces ---------------------------------------------------


def test_an_older_record_put_back_under_an_intact_root_is_lost_not_kept(
    damaged: Path, tmp_path: Path
) -> None:
    """The root and the manifest still vouch for versions: an older ciphertext of a record
    (here the registry entry of `home`, from before a retag) authenticates on its own row's
    version, yet is not the current value. The vault comes back, its entry made again."""
    home = vault_id(damaged, "home")
    keys = record_keys(damaged)
    ns_id = keys.ns_id(REGISTRY.name)
    where = (ns_id, keys.rec_id(ns_id, home.encode()))
    query = "SELECT ver, sealed FROM record WHERE ns = ? AND name = ?"
    with contextlib.closing(sqlite3.connect(damaged)) as db:
        old = db.execute(query, where).fetchone()
    with Node.open(damaged, PW, allow_weak=True) as node:
        node.vaults.retag("home", ["later"], [])
    with contextlib.closing(sqlite3.connect(damaged)) as db:
        db.execute(
            "UPDATE record SET ver = ?, sealed = ? WHERE ns = ? AND name = ?", (*old, *where)
        )
        db.commit()

    report = salvage(damaged, tmp_path / "new.pk", PW, allow_weak=True)
    assert [(x.namespace, x.key) for x in report.lost] == [(REGISTRY.name, home.encode())]
    assert "older or deleted value" in report.lost[0].problem
    assert any("vault home: its registry entry was lost" in note for note in report.repaired)
    assert not report.unchecked and not report.rebuilt
    got = contents(tmp_path / "new.pk")["vaults"]["home"]
    assert got["id"] == home and got["secrets"] == {"wifi": WIFI}


def test_records_of_a_namespace_nobody_names_are_lost_by_the_name_the_root_gives(
    damaged: Path, tmp_path: Path
) -> None:
    future = Namespace("future/feature")
    with Node.open(damaged, PW, allow_weak=True) as node, node.store.write() as tx:
        tx.put(future, b"a", b"1")
        tx.put(future, b"b", b"2")
    report = salvage(damaged, tmp_path / "new.pk", PW, allow_weak=True)
    assert [(x.namespace, x.count) for x in report.lost] == [("future/feature", 2)]
    assert not report.ok and not report.incomplete


def test_every_fixed_namespace_of_the_code_is_salvaged() -> None:
    """A namespace added to the code without adding it to FIXED would be lost by salvage."""
    src = Path(__file__).resolve().parents[2] / "src" / "polykey"
    found = set()
    for module in src.rglob("*.py"):
        found |= set(re.findall(r'Namespace\("([a-z0-9/_.-]+)"', module.read_text()))
    assert found, "no namespace found: the pattern is out of date"
    assert found == {ns.name for ns in FIXED}


def test_salvage_of_a_whole_node_is_the_same_node(original: Path, tmp_path: Path) -> None:
    report = salvage(original, tmp_path / "copy.pk", PW, allow_weak=True)
    assert report.ok and not report.rebuilt and not report.unchecked and not report.lost
    assert contents(tmp_path / "copy.pk") == contents(original)
    assert os.stat(tmp_path / "copy.pk").st_size > 0


def test_a_wrong_password_is_refused(damaged: Path, tmp_path: Path) -> None:
    from polykey.errors import WrongPassword

    flip(damaged, "root")
    with pytest.raises(WrongPassword):
        salvage(damaged, tmp_path / "new.pk", b"not it", allow_weak=True)
    assert not (tmp_path / "new.pk").exists()
    with pytest.raises(NodeDamaged):
        Node.open(damaged, PW, allow_weak=True)


def test_backup_restore_fills_what_salvage_lost(tmp_path: Path) -> None:
    """The next step the report gives: `pk backup restore` writes the lost object again."""
    from polykey.backup import backup, restore

    path = tmp_path / "node.pk"
    node, _ = Node.bootstrap(path, PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    with node:
        home = node.vaults.create("home")
        home.write("wifi", WIFI)
        backup(node, tmp_path / "backup.pk", PW, kdf=FAST_INSECURE_KDF, allow_weak=True)
    flip_record(path, objects_ns(home.id), bytes.fromhex(object_id(3, WIFI).decode()))
    flip(path, "root")
    report = salvage(path, tmp_path / "new.pk", PW, allow_weak=True)
    assert report.lost_count == 1 and list(report.incomplete) == ["home"]
    assert "pk backup restore" in report.next_steps()[0]
    with Node.open(tmp_path / "new.pk", PW, allow_weak=True) as new:
        restore(new, tmp_path / "backup.pk", PW, allow_weak=True)
        assert new.check() == []
        assert new.vaults.open("home").read("wifi") == WIFI


def test_an_object_that_does_not_hash_to_its_id_is_not_kept(damaged: Path, tmp_path: Path) -> None:
    """Write-once records carry no version: an object that authenticates is hashed again."""
    home = vault_id(damaged, "home")
    wrong = bytes(20)
    with Node.open(damaged, PW, allow_weak=True) as node, node.store.write() as tx:
        tx.put(objects_ns(home), wrong, b"\x03not what its id says")
    report = salvage(damaged, tmp_path / "new.pk", PW, allow_weak=True)
    assert [(x.namespace, x.key, x.problem) for x in report.lost] == [
        (f"vault/{home}/objects", wrong, "does not hash to its id")
    ]
    assert not report.incomplete
    assert contents(tmp_path / "new.pk")["vaults"]["home"]["secrets"] == {"wifi": WIFI}
