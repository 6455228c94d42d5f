"""`pk health` (vaults/health.py, vaults/strength.py, the vaults.health method, cli/health.py):
which secrets are passwords, strength against zxcvbn itself, KeePassXC's bands, reuse by keyed
hash, age from the history, conflict copies, breaches, the exposure hook; the command's output,
exit codes and refusals in a real process."""

from __future__ import annotations

import hashlib
import hmac
import io
import json
import math
import random
import string
import subprocess
import sys
import time
from pathlib import Path

import pytest
from zxcvbn import zxcvbn  # type: ignore[import-untyped]

from polykey.node import Node
from polykey.vaults import health, strength
from polykey.vaults.breaches import BreachFile, convert
from polykey.vaults.merge import copy_name
from tests.conftest import NodeFixture
from tests.support import PASSWORD, pk_env

STRONG = b"x8$Kq!29vLm#pQ7zR4tW"  # 20 characters of four classes: about 125 bits


def key_of(node: Node) -> bytes:
    return health.reuse_key(node.key.signing.seed())


def run(node: Node, names: list[str] | None = None, **kw: object) -> health.Report:
    return health.check(node.vaults, names or [], key_of(node), **kw)  # type: ignore[arg-type]


def found(report: health.Report) -> set[tuple[str, str, str]]:
    return {(f.vault, f.path, f.kind) for f in report.findings}


# --- strength ---------------------------------------------------------------------------------


def test_strength_is_zxcvbns_estimate_exactly_with_its_brute_force() -> None:
    rng = random.Random(15)
    alphabet = string.ascii_letters + string.digits + "!@#$%&*"
    corpus = ["password", "P@ssw0rd", "Tr0ub4dor&3", "correcthorsebatterystaple", "1q2w3e4r"]
    corpus += ["abcabcabc", "19/02/1987", "j0hnsm1th", "ДобрыйДень", "qwertyuiop", "a", "zz"]
    corpus += ["".join(rng.choice(alphabet) for _ in range(rng.randint(1, 40))) for _ in range(150)]
    words = ["pass", "word", "1", "@", "love", "key", "s3cr3t", "2019", "qwe", "abc", "Dragon"]
    corpus += ["".join(rng.choices(words, k=rng.randint(1, 7))) for _ in range(250)]
    for password in corpus:
        expected = math.log2(zxcvbn(password)["guesses"])
        assert strength.bits(password, cardinality=10) == pytest.approx(expected, abs=1e-9)


def test_brute_force_counts_the_character_classes_as_zxcvbn_c_does() -> None:
    assert strength.brute_force_cardinality("abc") == 26
    assert strength.brute_force_cardinality("aB3") == 62
    assert strength.brute_force_cardinality("aB3!") == 95
    assert strength.brute_force_cardinality("é") == 100
    assert strength.bits(STRONG.decode()) > 100  # zxcvbn's 10 a character would say 66


def test_keepassxc_bands_and_the_reuse_penalty() -> None:
    assert [strength.band(b) for b in (-1, 0, 0.5, 39.9, 40, 74.9, 75, 99.9, 100)] == [
        "bad", "bad", "poor", "poor", "weak", "weak", "good", "good", "excellent",
    ]  # fmt: skip
    assert strength.score(120, 1) == 120
    assert strength.score(120, 2) == 74  # a reused password is at best weak
    assert strength.score(50, 3) == 20  # 15 less for each other use
    assert strength.bits("") == 0
    assert strength.bits("a" * 200) == strength.bits("a" * strength.MAX_LENGTH)


# --- which secrets are checked ----------------------------------------------------------------


@pytest.mark.parametrize(
    ("path", "in_entry", "value", "kind"),
    [
        ("Bank/password", True, b"hunter2", "password"),
        ("Bank/username", True, b"bob", None),
        ("Bank/url", True, b"https://bank.example", None),
        ("Bank/password", True, b"two\nlines", None),
        ("prod/DB_PASSWORD", False, b"hunter2\n", "password"),
        ("prod/DB_HOST", False, b"localhost", None),
        ("prod/AWS_ACCESS_KEY_ID", False, b"AKIA", None),
        ("prod/api-url", False, b"x", None),
        ("prod/tls.pem", False, b"-----BEGIN CERTIFICATE-----\nMII\n", "secret"),
        ("prod/id_ed25519.pub", False, b"ssh-ed25519 AAAAC3Nz", "secret"),
        ("prod/.env", False, b"A=1\nB=2\n", "secret"),
        ("prod/blob", False, b"\x00\x01\x02", "secret"),
        ("prod/long", False, b"x" * 129, "secret"),
        ("prod/otp", False, b"otpauth://totp/x?secret=AAAA", "secret"),
    ],
)
def test_which_secrets_are_passwords(
    path: str, in_entry: bool, value: bytes, kind: str | None
) -> None:
    assert health.kind_of(path, in_entry, value) == kind


def test_only_passwords_are_scored_and_entries_other_fields_are_left_alone(
    fresh_node: NodeFixture,
) -> None:
    node = fresh_node.node
    node.vaults.create("work").write_many(
        [
            ("Bank/password", STRONG),
            ("Bank/username", b"admin"),  # weak as a password, but not one
            ("Bank/notes", b"x"),
            ("prod/DB_PASSWORD", b"hunter2\n"),
            ("prod/DB_USER", b"root"),
            ("prod/tls.pem", b"-----BEGIN CERTIFICATE-----\nMII\n-----END CERTIFICATE-----\n"),
            ("prod/.env", b"A=1\nB=2\n"),
        ],
        "Import",
    )
    report = run(node)
    assert found(report) == {("work", "prod/DB_PASSWORD", "weak")}
    assert (report.secrets, report.passwords) == (4, 2)  # Bank/password, DB_PASSWORD, pem, .env
    weak = report.findings[0]
    assert weak.band == "poor" and weak.detail.startswith("poor: about 13 bits")


# --- reuse ------------------------------------------------------------------------------------


def test_reuse_is_grouped_across_vaults_and_no_value_is_shown(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    node.vaults.create("work").write_many(
        [("mail/password", STRONG), ("vpn/password", STRONG + b"\n"), ("db", b"Zq7!" * 5)],
        "Import",
    )
    node.vaults.create("home").write("wifi", STRONG)
    report = run(node)
    reused = {(f.vault, f.path): f for f in report.findings if f.kind == "reused"}
    assert set(reused) == {("work", "mail/password"), ("work", "vpn/password"), ("home", "wifi")}
    assert reused["home", "wifi"].same_as == ("work:mail/password", "work:vpn/password")
    assert reused["home", "wifi"].detail == (
        "the same value as work:mail/password, work:vpn/password"
    )
    # three uses: 125 bits less 30, capped at 74: weak
    weak = [f for f in report.findings if f.kind == "weak" and (f.vault, f.path) in reused]
    assert {f.band for f in weak} == {"weak"} and len(weak) == 3
    assert ("work", "db", "weak") in found(report)  # a repeated pattern: poor
    text = json.dumps([f.__dict__ for f in report.findings])
    assert STRONG.decode() not in text and "Zq7!" not in text


def test_the_reuse_key_is_hkdf_of_the_root_seed_under_its_own_label() -> None:
    # docs/spec/health.md, "The keyed hash": RFC 5869 by hand, no salt, one block
    prk = hmac.new(bytes(32), bytes(32), hashlib.sha256).digest()
    by_hand = hmac.new(prk, b"polykey/v1 health reuse\x01", hashlib.sha256).digest()
    assert health.reuse_key(bytes(32)) == by_hand
    assert by_hand.hex() == "7deaed5345b09dfcc71f889e5988149efbc3615c6c59ca681150c72494f62575"


# --- age, conflicts, exposure, breaches -------------------------------------------------------


def test_age_is_each_secrets_last_change(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    vault = node.vaults.create("work")
    vault.write("old", STRONG)
    vault.write("kept", STRONG + b"2")
    time.sleep(1.1)
    vault.write("new", STRONG + b"3")
    vault.write("old", STRONG + b"4")  # changed again: no longer old
    changed = {p: vault.stat(p).modified for p in ("kept", "new", "old")}
    now = changed["kept"] + 86400 + 0.5
    report = run(node, max_age_days=0, now=now)
    assert {(f.path, f.days) for f in report.findings if f.kind == "old"} == {("kept", 1)}
    assert not [f for f in run(node).findings if f.kind == "old"]
    old = run(node, now=changed["old"] + 400 * 86400).findings
    assert {f.path for f in old} == {"kept", "new", "old"}
    assert old[0].detail.startswith("last changed 400 days ago (")


def test_conflict_copies_are_found_and_not_scored(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    copy = copy_name("db", "vABCDEFGH", 1_700_000_000)
    node.vaults.create("work").write_many([("db", STRONG), (copy, b"hunter2")], "Merge")
    report = run(node)
    assert found(report) == {("work", copy, "conflict")}
    assert report.findings[0].copy_of == "db"
    assert report.findings[0].detail == "an unresolved conflict copy of db (made by ABCDEFGH…)"


def test_exposed_secrets_still_there_need_rotation(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    node.vaults.create("work").write("db", STRONG)
    report = run(node, exposed={("work", "db"), ("work", "gone"), ("other", "x")})
    assert found(report) == {("work", "db", "exposed")}


def test_breached_passwords_are_found_in_the_breach_file(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    node = fresh_node.node
    node.vaults.create("work").write_many([("a", STRONG), ("b", b"hunter2\n")], "Import")
    listed = [hashlib.sha1(v).hexdigest() for v in (STRONG, b"password")]
    convert(io.BytesIO("".join(f"{h}:1\n" for h in listed).encode()), tmp_path / "b.pkb")
    with BreachFile(tmp_path / "b.pkb") as breaches:
        report = run(node, breaches=breaches)
    assert ("work", "a", "breached") in found(report)
    assert ("work", "b", "breached") not in found(report)
    assert report.breaches == "offline"
    assert run(node).breaches == "not checked"


def test_progress_is_told_for_every_password(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    node.vaults.create("work").write_many([(f"p{i}", b"pw%d" % i) for i in range(5)], "Import")
    told: list[tuple[int, int]] = []
    run(node, progress=lambda done, total: told.append((done, total)))
    assert told == [(1, 5), (2, 5), (3, 5), (4, 5), (5, 5)]


# --- the method ---------------------------------------------------------------------------------


METHOD = """
import json, sys
from pathlib import Path
import polykey.agent.methods.health  # registers vaults.health (until ROOMS lists it)
from polykey.agent import methods
from polykey.node import Node
from polykey.rpc import InvalidParams
with Node.open(Path(sys.argv[1]), sys.argv[2].encode(), allow_weak=True) as node:
    print(json.dumps(methods.call(node, "vaults.health", {"names": ["work"], "max_age_days": 30})))
    try:
        methods.call(node, "vaults.health", {"names": ["work"], "value": "x"})
    except InvalidParams as exc:
        print(exc.message)
"""


def test_the_method_answers_json_values_and_refuses_unknown_params(
    fresh_node: NodeFixture,
) -> None:
    # in a process of its own, so this one's registry stays as the table of rooms says
    fresh_node.node.vaults.create("work").write("db", b"hunter2")
    fresh_node.node.close()
    args = [sys.executable, "-c", METHOD, str(fresh_node.path), PASSWORD]
    out = subprocess.run(args, capture_output=True, check=True, text=True).stdout.splitlines()
    r = json.loads(out[0])
    assert r["vaults"] == ["work"] and r["findings"][0]["kind"] == "weak"
    assert out[1].startswith("Invalid parameters: ") and "value" in out[1]


# --- the command, in a real process -----------------------------------------------------------


def pk_health(node_path: Path, *args: str) -> subprocess.CompletedProcess[bytes]:
    env = pk_env(node_path, PK_PASSWORD=PASSWORD, PK_NO_AGENT="1")
    return subprocess.run(
        [sys.executable, "-m", "polykey", "health", *args],
        env=env,
        capture_output=True,
        timeout=120,
        check=False,
    )


def test_the_command_lists_findings_and_exits_7(fresh_node: NodeFixture) -> None:
    node = fresh_node.node
    node.vaults.create("work").write_many([("db", b"hunter2"), ("smtp", b"hunter2")], "Import")
    node.vaults.create("fine").write("db", STRONG)
    node.close()
    done = pk_health(fresh_node.path)
    assert done.returncode == 7, done.stderr
    out = done.stdout.decode()
    assert "work:db    weak    bad: about 13 bits, score -2 after the reuse penalty" in out
    assert "work:smtp  reused  the same value as work:db" in out
    assert "Found 2 weak, 2 reused in 2 vaults: 3 secrets checked, 3 of them passwords." in out
    assert "import-breaches" in out
    assert "hunter2" not in out and b"hunter2" not in done.stderr
    clean = pk_health(fresh_node.path, "fine", "--format", "json")
    assert clean.returncode == 0, clean.stderr
    doc = json.loads(clean.stdout)
    assert doc["findings"] == [] and doc["vaults"] == ["fine"] and doc["breaches"] == "not checked"


def test_import_breaches_then_check_with_the_file_beside_the_node(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    fresh_node.node.vaults.create("work").write("db", STRONG)
    fresh_node.node.close()
    source = tmp_path / "pwned.txt"
    source.write_text(f"{hashlib.sha1(STRONG).hexdigest().upper()}:2\n")
    made = pk_health(fresh_node.path, "import-breaches", str(source))
    assert made.returncode == 0, made.stderr
    assert (fresh_node.path.parent / "breaches.pkb").exists()
    done = pk_health(fresh_node.path, "--format", "json")
    assert done.returncode == 7
    doc = json.loads(done.stdout)
    assert doc["breaches"] == "offline"
    assert [f["kind"] for f in doc["findings"]] == ["breached"]


def test_a_malformed_breach_list_is_one_line_and_a_hint(
    fresh_node: NodeFixture, tmp_path: Path
) -> None:
    fresh_node.node.close()
    source = tmp_path / "pwned.txt"
    source.write_bytes(b"5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:3\nhunter2\n")
    done = pk_health(fresh_node.path, "import-breaches", str(source))
    assert done.returncode == 3
    assert done.stderr.decode().splitlines() == [
        "pk: error: The breach list is malformed: line 2 has no `:COUNT`",
        "pk: hint: Give Have I Been Pwned's SHA-1 list (the downloader's default): one "
        "`HASH:COUNT` line each, 40 hex digits, a colon and the count.",
    ]
    assert not (fresh_node.path.parent / "breaches.pkb").exists()


def test_missing_files_are_refused_with_a_hint(fresh_node: NodeFixture, tmp_path: Path) -> None:
    fresh_node.node.close()
    done = pk_health(fresh_node.path, "import-breaches", str(tmp_path / "none.txt"))
    assert done.returncode == 3
    lines = done.stderr.decode().splitlines()
    assert lines[0].startswith("pk: error: The breach list cannot be read: ")
    assert lines[1].startswith("pk: hint: Give the path of Have I Been Pwned's SHA-1 list")
    done = pk_health(fresh_node.path, "--breaches", str(tmp_path / "none.pkb"))
    assert done.returncode == 3
    lines = done.stderr.decode().splitlines()
    assert lines[0] == f"pk: error: No breach file: {tmp_path / 'none.pkb'}"
    assert lines[1].startswith("pk: hint: Import Have I Been Pwned's SHA-1 list once")


def test_the_command_through_a_running_agent(tmp_path: Path) -> None:
    from tests.support import run_pk

    env = pk_env(tmp_path / "n.pk", PK_PASSWORD=PASSWORD, PK_RUNTIME_DIR=str(tmp_path / "run"))
    assert run_pk("bootstrap", env=env).returncode == 0
    assert run_pk("vaults", "create", "work", env=env).returncode == 0
    for path in ("db", "smtp"):
        run_pk("secrets", "write", f"work:{path}", env=env, input=b"hunter2")
    assert run_pk("agent", "start", "--background", env=env).returncode == 0
    try:
        r = run_pk("health", "--format", "json", env=env)
        assert r.returncode == 7, r.stderr
        doc = json.loads(r.stdout)
        kinds = {(f["path"], f["kind"]) for f in doc["findings"]}
        assert ("db", "weak") in kinds and ("db", "reused") in kinds
        assert b"hunter2" not in r.stdout + r.stderr
    finally:
        run_pk("agent", "stop", env=env)
