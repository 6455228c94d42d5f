"""Fixtures for import/export tests: a node per test, a throwaway GnuPG home, a password-store."""

from __future__ import annotations

import os
import shutil
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tests.cli.helpers import CliNode, bootstrap


@pytest.fixture
def node(tmp_path: Path) -> CliNode:
    return bootstrap(tmp_path / "node" / "node.pk")


@pytest.fixture
def env(node: CliNode, tmp_path: Path) -> dict[str, str]:
    """The node's environment, with a private runtime folder (no other test's agent)."""
    runtime = tmp_path / "run"
    runtime.mkdir(mode=0o700)
    return node.env(PK_RUNTIME_DIR=str(runtime))


@dataclass(frozen=True)
class Gpg:
    home: Path
    fingerprint: str

    def env(self, base: dict[str, str] | None = None, **extra: str) -> dict[str, str]:
        out = dict(base if base is not None else os.environ)
        out["GNUPGHOME"] = str(self.home)
        out.update(extra)
        return out

    def run(self, *args: str, input: bytes | None = None) -> subprocess.CompletedProcess[bytes]:
        return subprocess.run(
            ["gpg", "--batch", *args],
            env=self.env(),
            input=input,
            capture_output=True,
            check=True,
        )


def make_gpg(home: Path, uid: str) -> Gpg:
    home.mkdir(mode=0o700, parents=True)
    g = Gpg(home, "")
    g.run("--passphrase", "", "--quick-gen-key", uid, "ed25519", "cert,sign", "never")
    colons = g.run("--list-keys", "--with-colons", uid).stdout.decode()
    fpr = next(line.split(":")[9] for line in colons.splitlines() if line.startswith("fpr:"))
    g.run("--passphrase", "", "--quick-add-key", fpr, "cv25519", "encr", "never")
    return Gpg(home, fpr)


@pytest.fixture(scope="session")
def gpg(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gpg]:
    """A GnuPG home with one key and no passphrase, for the whole session."""
    if shutil.which("gpg") is None:
        pytest.skip("gpg is not installed (apt install gnupg)")
    g = make_gpg(tmp_path_factory.mktemp("gpg") / "home", "Polykey Test <test@polykey.invalid>")
    yield g
    subprocess.run(["gpgconf", "--kill", "gpg-agent"], env=g.env(), check=False)
