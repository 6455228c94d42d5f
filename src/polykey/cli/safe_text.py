"""Text that another node chose, made safe to print on a terminal.

Vault names from a scan, commit messages, notifications, secret paths and tags, and a peer's
error messages all come from other nodes. Printed raw, a control sequence in them would reach
the user's terminal: OSC 52 writes the clipboard on many terminals, others set the title or
forge what the screen shows. :func:`shown` renders every such character visibly instead (ESC
becomes the four characters ``\\x1b``), so the text is still readable and nothing is hidden.

Escaped: the C0 controls (newline and tab too, unless the field is multi-line), DEL, the C1
controls U+0080-U+009F (8-bit CSI is U+009B), the Unicode bidirectional controls that reorder
what is displayed (U+061C, U+200E, U+200F, U+202A-U+202E, U+2066-U+2069), the line and paragraph
separators U+2028 and U+2029, and lone surrogates (text decoded with ``surrogateescape``).
JSON output needs none of this: ``json.dumps`` escapes all of them by construction.
"""

from __future__ import annotations

import re

_BIDI_AND_SEPARATORS = "\u061c\u200e\u200f\u2028\u2029\u202a-\u202e\u2066-\u2069\ud800-\udfff"
_ONE_LINE = re.compile(f"[\x00-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")
_MULTI_LINE = re.compile(f"[\x00-\x08\x0b-\x1f\x7f-\x9f{_BIDI_AND_SEPARATORS}]")


def _escape(match: re.Match[str]) -> str:
    code = ord(match.group())
    return f"\\x{code:02x}" if code <= 0xFF else f"\\u{code:04x}"


def shown(text: object, *, multiline: bool = False) -> str:
    """``text`` (anything; not-text is shown with ``str``) with every character that could
    drive a terminal escaped visibly. ``multiline`` keeps newlines and tabs."""
    value = text if isinstance(text, str) else str(text)
    return (_MULTI_LINE if multiline else _ONE_LINE).sub(_escape, value)


def indented(text: object, indent: int) -> str:
    """A multi-line field, escaped, its second and later lines indented by ``indent`` spaces,
    so that a line inside it cannot pass for a line of the output around it."""
    first, *rest = shown(text, multiline=True).split("\n")
    pad = " " * indent
    return "\n".join([first, *(pad + line for line in rest)])
