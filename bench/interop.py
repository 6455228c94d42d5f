"""Import/export figures: a 1,000-entry pass store next to gpg's own decryption time, and a
10,000-entry KeePass file."""

from __future__ import annotations

import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from bench.common import Row
from polykey.interop.keepass import write_kdbx
from polykey.interop.layout import Entry
from polykey.interop.passstore import write_store


def _pk(env: dict[str, str], *args: str) -> float:
    t = time.perf_counter()
    subprocess.run(
        [sys.executable, "-m", "polykey", *args], env=env, check=True, capture_output=True
    )
    return time.perf_counter() - t


def _gpg_home(home: Path) -> str:
    home.mkdir(mode=0o700)
    env = {**os.environ, "GNUPGHOME": str(home)}
    uid = "Bench <bench@polykey.invalid>"
    run = ["gpg", "--batch", "--passphrase", ""]
    subprocess.run(
        [*run, "--quick-gen-key", uid, "ed25519", "cert,sign", "never"],
        env=env,
        check=True,
        capture_output=True,
    )
    out = subprocess.run(
        ["gpg", "--list-keys", "--with-colons"], env=env, check=True, capture_output=True
    ).stdout.decode()
    fpr = next(x.split(":")[9] for x in out.splitlines() if x.startswith("fpr:"))
    subprocess.run(
        [*run, "--quick-add-key", fpr, "cv25519", "encr", "never"],
        env=env,
        check=True,
        capture_output=True,
    )
    return fpr


def _pass_rows(tmp: Path, env: dict[str, str], quick: bool) -> list[Row]:
    if shutil.which("gpg") is None:
        return [("pass import", "skipped", "gpg not installed")]
    fpr = _gpg_home(tmp / "gnupg")
    env = {**env, "GNUPGHOME": str(tmp / "gnupg")}
    os.environ["GNUPGHOME"] = env["GNUPGHOME"]  # write_store runs gpg from this process
    n = 200 if quick else 1000
    items = [
        (
            f"site{i % 50:02d}/login{i:04d}",
            f"pw-{i}\nusername: user{i}\nurl: https://s{i}.example\n".encode(),
        )
        for i in range(n)
    ]
    store = tmp / "store"
    write_store(store, items, [fpr], None)
    files = sorted(store.rglob("*.gpg"))
    serial = []
    for _ in range(2 if quick else 3):
        t = time.perf_counter()
        for f in files:
            subprocess.run(
                ["gpg", "--decrypt", "--quiet", "--batch", str(f)],
                env=env,
                check=True,
                capture_output=True,
            )
        serial.append(time.perf_counter() - t)
    imports = [
        _pk(env, "import", "pass", str(store), "--vault", f"p{k}") for k in range(2 if quick else 3)
    ]
    each = _pk(env, "import", "pass", str(store), "--vault", "each", "--commit-each")
    out = tmp / "out"
    exported = _pk(env, "export", "pass", "p0", "--to", str(out), "--gpg-recipient", fpr)
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=env, check=False)
    g, i = statistics.median(serial), statistics.median(imports)
    return [
        (f"gpg --decrypt x{n}, one after another (pass show each)", f"{g:.2f} s", "the floor"),
        (f"pk import pass, {n} entries, one commit", f"{i:.2f} s", f"{i / g:.2f}x gpg"),
        (f"pk import pass, {n} entries, --commit-each", f"{each:.2f} s", ""),
        (f"pk export pass, {n} entries", f"{exported:.2f} s", ""),
    ]


def _keepass_rows(tmp: Path, env: dict[str, str], quick: bool) -> list[Row]:
    n = 2000 if quick else 10000
    entries = []
    for i in range(n):
        e = Entry((f"Group {i % 20}", f"Sub {i % 7}"), f"Entry {i}")
        e.fields = {
            "password": os.urandom(12).hex().encode(),
            "username": f"user{i}".encode(),
            "url": f"https://site{i}.example".encode(),
            "notes": b"some notes\nline two",
            "Recovery": b"r-" + str(i).encode(),
        }
        entries.append(e)
    kdbx = tmp / "big.kdbx"
    t = time.perf_counter()
    write_kdbx(kdbx, entries, "bench")
    made = time.perf_counter() - t
    env = {**env, "PK_SOURCE_PASSWORD": "bench", "PK_TARGET_PASSWORD": "bench"}
    runs = 1 if quick else 3
    imports = [_pk(env, "import", "keepass", str(kdbx), "--vault", f"k{k}") for k in range(runs)]
    exported = _pk(env, "export", "keepass", "k0", str(tmp / "again.kdbx"))
    med = statistics.median(imports)
    return [
        (f"pk import keepass, {n} entries ({n * 5} secrets)", f"{med:.2f} s", "< 20 s for 10,000"),
        (f"pk export keepass, {n} entries", f"{exported:.2f} s", ""),
        (f"pykeepass writing the same {n} entries (the library alone)", f"{made:.2f} s", ""),
    ]


def section(quick: bool) -> list[Row]:
    tmp = Path(tempfile.mkdtemp(prefix="pk-bench-interop-"))
    saved = os.environ.get("GNUPGHOME")
    try:
        env = {k: v for k, v in os.environ.items() if not k.startswith("PK_")}
        env |= {"PK_NODE": str(tmp / "node.pk"), "PK_PASSWORD": "pw", "PK_UNSAFE_FAST_KDF": "1"}
        env["PK_RUNTIME_DIR"] = str(tmp / "run")
        (tmp / "run").mkdir(mode=0o700)
        subprocess.run(
            [sys.executable, "-m", "polykey", "bootstrap"], env=env, check=True, capture_output=True
        )
        return _pass_rows(tmp, env, quick) + _keepass_rows(tmp, env, quick)
    finally:
        if saved is None:
            os.environ.pop("GNUPGHOME", None)
        else:
            os.environ["GNUPGHOME"] = saved
        shutil.rmtree(tmp, ignore_errors=True)
