"""`pk otp VAULT:PATH`: the current TOTP code of an otpauth:// secret (or its QR code)."""

from __future__ import annotations

import io

import click

from polykey.cli.common import Settings, emit, node_options, pass_settings, split_address
from polykey.errors import InvalidInput


def _otp_line(text: str) -> str:
    """The otpauth:// line of a secret (a pass entry keeps it among other lines), else line 1."""
    lines = text.splitlines()
    for line in lines:
        if line.strip().startswith("otpauth://"):
            return line.strip()
    return lines[0] if lines and text.strip() else ""


@click.command()
@node_options
@click.argument("address", metavar="VAULT:PATH")
@click.option("--qr", is_flag=True, help="Show the otpauth:// URI as a QR code (to enrol a phone).")
@pass_settings
def otp(s: Settings, address: str, qr: bool) -> None:
    """The current one-time code of a TOTP secret (an otpauth:// URI or a base32 key)."""
    from polykey.crypto.otp import BadOtpSecret, parse

    vault, path = split_address(address)
    if s.call("secrets.kind", {"vault": vault, "path": path}).get("kind") == "dir":
        path = f"{path.rstrip('/')}/otp"  # an entry folder (docs/spec/entries.md)
    from polykey.values import as_value

    value = as_value(s.call("secrets.cat", {"items": [[vault, path]]})["secrets"][0]["data"])
    try:
        text = value.decode("utf-8")
        spec = parse(_otp_line(text))
    except (UnicodeDecodeError, BadOtpSecret, IndexError) as exc:
        raise InvalidInput(
            f"{address} is not a TOTP secret ({exc})" if str(exc) else f"{address} is empty",
            hint="Store an otpauth://totp/... URI or a base32 key.",
        ) from None
    if qr:
        import segno

        out = io.StringIO()
        segno.make(_otp_line(text), error="m").terminal(out=out, compact=True)
        emit(s, out.getvalue().rstrip("\n"), {"uri_qr": True})
        return
    code = spec.code()
    emit(s, code, {"code": code, "remaining": spec.remaining(), "period": spec.period})
