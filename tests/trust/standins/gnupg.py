"""Throwaway OpenPGP keys for tests, made by real gpg in a temporary GNUPGHOME (ed25519, no
passphrase): what a user's own gpg and gpg-agent would hold."""

from __future__ import annotations

import os
import subprocess
from dataclasses import dataclass, field
from pathlib import Path


@dataclass
class GnuPG:
    home: Path
    keys: dict[str, str] = field(default_factory=dict)  # name -> primary fingerprint

    @property
    def env(self) -> dict[str, str]:
        return {**os.environ, "GNUPGHOME": str(self.home)}

    def gpg(self, *args: str, stdin: bytes = b"") -> bytes:
        quiet = ["--batch", "--no-tty", "--pinentry-mode", "loopback", "--passphrase", ""]
        done = subprocess.run(
            ["gpg", *quiet, *args],
            input=stdin,
            capture_output=True,
            env=self.env,
            timeout=60,
            check=False,
        )
        assert done.returncode == 0, (args, done.stderr.decode())
        return done.stdout

    def make(self, name: str, *, usage: str = "sign", expires: str = "0", at: str = "") -> str:
        """A new key for ``name@example.org``: its fingerprint. ``at``: made at that time
        (gpg's --faked-system-time, e.g. 20200101T000000)."""
        faked = ["--faked-system-time", at] if at else []
        self.gpg(
            *faked, "--quick-gen-key", f"{name} <{name}@example.org>", "ed25519", usage, expires
        )
        listing = self.gpg("--with-colons", "--list-keys", f"<{name}@example.org>").decode()
        fingerprint = next(x.split(":")[9] for x in listing.splitlines() if x.startswith("fpr"))
        self.keys[name] = fingerprint
        return fingerprint

    def add_signing_subkey(self, name: str) -> None:
        self.gpg("--quick-add-key", self.keys[name], "ed25519", "sign", "0")

    def revoke(self, name: str) -> None:
        cert = (self.home / "openpgp-revocs.d" / f"{self.keys[name]}.rev").read_text()
        self.gpg("--import", stdin=cert.replace(":-----BEGIN", "-----BEGIN").encode())

    def public(self, name: str, *, armor: bool = True) -> bytes:
        return self.gpg(*(["--armor"] if armor else []), "--export", self.keys[name])

    def sign(self, name: str, text: str, *extra: str) -> str:
        """An armored detached signature of ``text`` by ``name``'s key."""
        args = [*extra, "--detach-sign", "--armor", "--local-user", self.keys[name]]
        return self.gpg(*args, "--output", "-", stdin=text.encode()).decode()

    def clearsign(self, name: str, text: str) -> str:
        args = ["--clearsign", "--local-user", self.keys[name], "--output", "-"]
        return self.gpg(*args, stdin=text.encode()).decode()

    def stop(self) -> None:
        subprocess.run(
            ["gpgconf", "--kill", "gpg-agent"], env=self.env, capture_output=True, check=False
        )
