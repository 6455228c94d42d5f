"""OpenPGP through real GnuPG: reading a signature, checking it against a public key, and
(for the CLI, in the user's own environment) asking the user's gpg to sign
(docs/spec/identities.md, "OpenPGP").

Verification runs ``gpg`` in a new temporary home holding nothing but the public key given:
the user's keyring is never read or changed, no agent or dirmngr is started, and no key is
fetched. What gpg reports on its status channel decides; the signature must be one detached
OpenPGP signature packet made by the key named (its primary key or a subkey), by a key neither
revoked nor expired, with a hash stronger than SHA-1.
"""

from __future__ import annotations

import binascii
import os
import shutil
import subprocess
import tempfile
import urllib.parse
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path

from polykey.trust.providers.base import ProofInvalid, ProviderError

PROGRAM = "gpg"
TIMEOUT = 10.0  # seconds for one gpg run
MAX_SIGNATURE = 4096  # bytes of a binary signature
MAX_ARMOR = 8192  # characters of an armored signature or a clearsigned message
WEAK_HASHES = {"1", "2", "3"}  # MD5, SHA-1, RIPEMD-160 (RFC 9580 9.5)
_BEGIN_SIG = "-----BEGIN PGP SIGNATURE-----"
_END_SIG = "-----END PGP SIGNATURE-----"
_BEGIN_SIGNED = "-----BEGIN PGP SIGNED MESSAGE-----"
_QUIET = ("--batch", "--no-tty", "--no-autostart", "--no-options", "--no-permission-warning")


class GpgUnavailable(ProviderError):
    """GnuPG could not be run."""

    hint = "Install GnuPG (the `gpg` program); OpenPGP proofs are checked with it."


class SigningFailed(ProviderError):
    """gpg did not sign the statement."""

    hint = (
        "Check that the secret key is in your GnuPG keyring (`gpg -K FINGERPRINT`); or sign "
        "elsewhere: `pk identities claim ID --statement`, then `--signature FILE`."
    )


class KeyInvalid(ProofInvalid):
    """The OpenPGP key is not valid for this proof."""

    hint = "The key must be the one the identity names, neither revoked nor expired."


class OtherKey(KeyInvalid):
    """The OpenPGP key found is not the key named."""

    hint = "A source answered with another key; nothing from it was trusted."


class SignatureInvalid(ProofInvalid):
    """The OpenPGP signature does not prove the claim."""

    hint = "Sign the statement `pk identities claim ID --statement` prints, as it is, again."


@dataclass(frozen=True)
class Signer:
    """Who made a good signature: the signing key (a subkey or the primary), its primary key,
    and when (unix seconds)."""

    key: str
    primary: str
    created: int


def read_signature(text: str) -> tuple[bytes, str | None]:
    """One OpenPGP signature from what a person pastes: an armored detached signature, or a
    clearsigned message (then its text is returned too, to be compared with the statement)."""
    if len(text) > MAX_ARMOR:
        raise SignatureInvalid(f"a signature of {len(text)} characters, over {MAX_ARMOR}")
    lines = [line.rstrip() for line in text.replace("\r\n", "\n").split("\n")]
    signed: str | None = None
    if _BEGIN_SIGNED in lines:
        start = lines.index(_BEGIN_SIGNED) + 1
        if _BEGIN_SIG not in lines[start:]:
            raise SignatureInvalid("a clearsigned message without its signature")
        end = lines.index(_BEGIN_SIG, start)
        body = lines[start:end]
        while body and body[0]:  # the Hash: headers, up to a blank line
            body.pop(0)
        signed = "\n".join(line[2:] if line.startswith("- ") else line for line in body[1:])
    signature = dearmor(lines)
    check_packet(signature)
    return signature, signed


def dearmor(lines: list[str]) -> bytes:
    """The bytes of the (first) armored signature block in ``lines``."""
    if _BEGIN_SIG not in lines or _END_SIG not in lines:
        raise SignatureInvalid("no -----BEGIN PGP SIGNATURE----- block")
    start = lines.index(_BEGIN_SIG) + 1
    end = lines.index(_END_SIG, start) if _END_SIG in lines[start:] else -1
    if end < 0:
        raise SignatureInvalid("the signature block is not closed")
    body = [line.strip() for line in lines[start:end]]
    while body and ": " in body[0]:  # armor headers (Version:, Comment:)
        body.pop(0)
    if body and body[-1].startswith("=") and len(body[-1]) == 5:
        body.pop()  # the CRC-24 line: optional, gpg checks the signature itself
    try:
        return binascii.a2b_base64("".join(body), strict_mode=True)
    except (binascii.Error, ValueError):
        raise SignatureInvalid("the signature block is not base64") from None


def check_packet(signature: bytes) -> None:
    """Refuse anything but exactly one OpenPGP signature packet (tag 2) of a data signature
    (binary 0x00 or text 0x01), at most 4,096 bytes."""
    if not 0 < len(signature) <= MAX_SIGNATURE:
        raise SignatureInvalid(f"a signature of {len(signature)} bytes (1 to {MAX_SIGNATURE})")
    packets = list(_packets(signature))
    if len(packets) != 1 or packets[0][0] != 2:
        raise SignatureInvalid("not one OpenPGP signature packet")
    body = packets[0][1]
    kind = body[2] if body[:1] == b"\x03" and len(body) > 2 else body[1] if len(body) > 1 else -1
    if body[:1] not in (b"\x03", b"\x04", b"\x05", b"\x06") or kind not in (0, 1):
        raise SignatureInvalid("not a detached signature of a document")


def _packets(data: bytes) -> list[tuple[int, bytes]]:
    out: list[tuple[int, bytes]] = []
    i = 0
    while i < len(data):
        head = data[i]
        if not head & 0x80:
            raise SignatureInvalid("not OpenPGP data")
        if head & 0x40:  # new format
            tag = head & 0x3F
            first = data[i + 1] if i + 1 < len(data) else 0
            if first < 192:
                size, i = first, i + 2
            elif first < 224:
                size = ((first - 192) << 8) + (data[i + 2] if i + 2 < len(data) else 0) + 192
                i += 3
            elif first == 255:
                size, i = int.from_bytes(data[i + 2 : i + 6], "big"), i + 6
            else:
                raise SignatureInvalid("a partial-length packet")
        else:  # old format
            tag, kind = (head >> 2) & 0x0F, head & 0x03
            if kind == 3:
                raise SignatureInvalid("a packet of indeterminate length")
            width = 1 << kind
            size, i = int.from_bytes(data[i + 1 : i + 1 + width], "big"), i + 1 + width
        if i + size > len(data):
            raise SignatureInvalid("a packet cut short")
        out.append((tag, data[i : i + size]))
        i += size
    return out


def verify(
    key: bytes, fingerprint: str, data: bytes, signature: bytes, *, timeout: float = TIMEOUT
) -> Signer:
    """Check that ``signature`` is a good signature of ``data`` by the key whose primary
    fingerprint is ``fingerprint`` (found in ``key``, which may hold others), in a fresh
    GnuPG home. A text-mode signature (a clearsigned message's) signs the text without its
    final line break, so that is tried when ``data`` itself does not verify."""
    check_packet(signature)
    wanted = fingerprint.upper()
    with tempfile.TemporaryDirectory(prefix="pk-gpg-") as home:
        os.chmod(home, 0o700)
        _run(home, ["--import"], key, timeout)
        validity = _primaries(home, timeout)
        if wanted not in validity:
            raise OtherKey(f"it is not {wanted}")
        if validity[wanted] == "r":
            raise KeyInvalid(f"the key {wanted} is revoked")
        if validity[wanted] == "e":
            raise KeyInvalid(f"the key {wanted} has expired")
        sig_path = Path(home, "statement.sig")
        sig_path.write_bytes(signature)
        tries = [data]
        if data.endswith(b"\n"):
            tries.append(data[:-1])
        problem: SignatureInvalid | KeyInvalid = SignatureInvalid("the signature does not match")
        for attempt in tries:
            Path(home, "statement").write_bytes(attempt)
            args = ["--trust-model", "always", "--status-fd", "1", "--verify"]
            args += [str(sig_path), str(Path(home, "statement"))]
            status = _run(home, args, b"", timeout, check=False)
            try:
                return _judge(status, wanted)
            except _BadSig:
                continue
            except (SignatureInvalid, KeyInvalid) as exc:
                problem = exc
                break
        raise problem


def notations(key: bytes, fingerprint: str, *, timeout: float = TIMEOUT) -> list[tuple[str, str]]:
    """The (name, value) notations on the newest good self-signature of each user ID of the
    key whose primary fingerprint is ``fingerprint`` (found in ``key``), read by gpg in a fresh
    GnuPG home: what its owner says about the key (Keyoxide's ``proof@ariadne.id``). A
    revoked or expired key, or a revoked user ID, says nothing (KeyInvalid for the key)."""
    wanted = fingerprint.upper()
    with tempfile.TemporaryDirectory(prefix="pk-gpg-") as home:
        os.chmod(home, 0o700)
        _run(home, ["--import"], key, timeout)
        validity = _primaries(home, timeout)
        if wanted not in validity:
            raise OtherKey(f"it is not {wanted}")
        if validity[wanted] in ("r", "e"):
            raise KeyInvalid(
                f"the key {wanted} is {'revoked' if validity[wanted] == 'r' else 'expired'}"
            )
        args = ["--with-colons", "--fixed-list-mode", "--with-sig-check"]
        args += ["--list-options", "show-sig-subpackets=20", "--list-sigs", wanted]
        listing = _run(home, args, b"", timeout, check=False)
    return _self_notations(listing, wanted)


def _self_notations(listing: str, fingerprint: str) -> list[tuple[str, str]]:
    """From gpg's colon listing: the notations of each live user ID's newest good self-sig."""
    key_id = fingerprint[-16:]
    newest: dict[int, tuple[int, list[tuple[str, str]]]] = {}  # uid -> (created, notations)
    count = 0  # user IDs seen
    uid: int | None = None  # the live user ID being read
    sig: int | None = None  # when the self-signature whose subpackets follow was made
    for line in listing.splitlines():
        fields = line.split(":")
        if fields[0] in ("pub", "sub", "uat"):
            uid = sig = None
        elif fields[0] == "uid":
            count += 1
            uid, sig = (None if fields[1:2] == ["r"] else count), None
        elif fields[0] == "sig" and uid is not None and len(fields) > 10:
            sig = None
            good = fields[1] == "!" and fields[4].upper() == key_id
            created = int(fields[5]) if fields[5].isdigit() else -1
            self_sig = good and fields[10][:2] in ("10", "11", "12", "13")
            if self_sig and created >= newest.get(uid, (-1, []))[0]:
                newest[uid] = (created, [])
                sig = created
        elif fields[0] == "spk" and uid is not None and sig is not None and fields[1] == "20":
            found = _notation(":".join(fields[4:]))
            if found is not None:
                newest[uid][1].append(found)
    return [n for _, (_, found) in sorted(newest.items()) for n in found]


def _notation(escaped: str) -> tuple[str, str] | None:
    """A notation subpacket as gpg's colon listing writes it (percent-escaped): 4 flag bytes,
    2 bytes the name's length, 2 the value's, the name, the value; human-readable only."""
    raw = urllib.parse.unquote_to_bytes(escaped)
    if len(raw) < 8 or not raw[0] & 0x80:
        return None
    names, values = int.from_bytes(raw[4:6], "big"), int.from_bytes(raw[6:8], "big")
    if len(raw) != 8 + names + values:
        return None
    try:
        return raw[8 : 8 + names].decode(), raw[8 + names :].decode()
    except UnicodeDecodeError:
        return None


class _BadSig(Exception):
    pass


def _judge(status: str, wanted: str) -> Signer:
    seen: dict[str, list[str]] = {}
    news = 0
    for line in status.splitlines():
        if not line.startswith("[GNUPG:] "):
            continue
        word, *args = line[9:].split(" ")
        news += word == "NEWSIG"
        seen.setdefault(word, args)
    if news != 1:
        raise SignatureInvalid("not exactly one signature")
    if "BADSIG" in seen:
        raise _BadSig
    if "REVKEYSIG" in seen:
        raise KeyInvalid(f"the signing key of {wanted} is revoked")
    if "EXPKEYSIG" in seen:
        raise KeyInvalid(f"the signing key of {wanted} has expired")
    if "EXPSIG" in seen:
        raise SignatureInvalid("the signature has expired")
    if "ERRSIG" in seen:
        raise SignatureInvalid(f"the signature is not by the key {wanted}, or cannot be checked")
    valid = seen.get("VALIDSIG")
    if "GOODSIG" not in seen or valid is None or len(valid) < 10:
        raise SignatureInvalid("gpg did not report a good signature")
    if valid[9].upper() != wanted:
        raise SignatureInvalid(f"the signature is by another key than {wanted}")
    if valid[7] in WEAK_HASHES:
        raise SignatureInvalid("the signature uses a hash weaker than SHA-256")
    created = int(valid[2]) if valid[2].isdigit() else 0
    return Signer(valid[0].upper(), wanted, created)


def _primaries(home: str, timeout: float) -> dict[str, str]:
    """Primary fingerprint -> its validity letter (``r`` revoked, ``e`` expired, …)."""
    out = _run(home, ["--with-colons", "--fixed-list-mode", "--list-keys"], b"", timeout)
    found: dict[str, str] = {}
    validity: str | None = None
    for line in out.splitlines():
        fields = line.split(":")
        if fields[0] == "pub":
            validity = fields[1] if len(fields) > 1 else ""
        elif fields[0] == "sub":
            validity = None
        elif fields[0] == "fpr" and validity is not None and len(fields) > 9:
            found[fields[9].upper()] = validity
            validity = None
    return found


def _run(home: str, args: list[str], stdin: bytes, timeout: float, *, check: bool = True) -> str:
    program = shutil.which(PROGRAM)
    if program is None:
        raise GpgUnavailable("gpg is not installed")
    try:
        done = subprocess.run(
            [program, "--homedir", home, *_QUIET, *args],
            input=stdin,
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GpgUnavailable(f"gpg took over {timeout:g} s") from None
    except OSError as exc:
        raise GpgUnavailable(f"gpg could not be run: {exc.strerror}") from None
    if check and done.returncode != 0 and args[0] == "--import":
        raise KeyInvalid("the key found is not a valid OpenPGP key")
    return done.stdout.decode("utf-8", "replace")


def export(keyring: str, fingerprint: str, *, timeout: float = TIMEOUT) -> bytes:
    """The public key ``fingerprint`` from a GnuPG home directory (read only); b"" when it
    holds no such key."""
    program = shutil.which(PROGRAM)
    if program is None:
        raise GpgUnavailable("gpg is not installed")
    try:
        done = subprocess.run(
            [program, "--homedir", keyring, *_QUIET, "--export", fingerprint],
            capture_output=True,
            timeout=timeout,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise GpgUnavailable(f"gpg took over {timeout:g} s") from None
    except OSError as exc:
        raise GpgUnavailable(f"gpg could not be run: {exc.strerror}") from None
    return done.stdout if done.returncode == 0 else b""


def sign(statement: str, fingerprint: str, env: Mapping[str, str] | None = None) -> str:
    """Ask the user's gpg (their keyring and gpg-agent, which may ask for the passphrase) for
    an armored detached signature of ``statement`` by ``fingerprint``. The private key never
    leaves gpg. For the CLI, which passes the user's environment."""
    program = shutil.which(PROGRAM, path=(env or {}).get("PATH"))
    if program is None:
        raise GpgUnavailable("gpg is not installed")
    try:
        done = subprocess.run(
            [program, "--detach-sign", "--armor", "--local-user", fingerprint, "--output", "-"],
            input=statement.encode(),
            capture_output=True,
            env=dict(env) if env is not None else None,
            timeout=300,
            check=False,
        )
    except subprocess.TimeoutExpired:
        raise SigningFailed("gpg took over 300 s") from None
    except OSError as exc:
        raise GpgUnavailable(f"gpg could not be run: {exc.strerror}") from None
    if done.returncode != 0 or _BEGIN_SIG.encode() not in done.stdout:
        last = done.stderr.decode("utf-8", "replace").strip().splitlines()[-1:] or ["no output"]
        raise SigningFailed(last[0][:200])
    return done.stdout.decode("ascii", "replace")
