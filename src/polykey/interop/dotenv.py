""".env files: the one reader (`pk import dotenv`, `pk run --env-file`) and the one writer
(`pk export dotenv`, `pk secrets env --format dotenv`). The rules are docs/spec/dotenv.md.

The reader never puts the file's text in what it reports: a value is a secret, and a line that
does not parse may be one (a password pasted on its own line).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import NamedTuple

NAME = re.compile(r"[A-Za-z_][A-Za-z0-9_.-]*")
# a line that assigns: indent, `export` (but `export=1` names a variable), the name, `=`
_ASSIGN = re.compile(r"[ \t]*(?:export[ \t]+)?(?P<name>[A-Za-z_][A-Za-z0-9_.-]*)[ \t]*=[ \t]*")
_SKIP = re.compile(r"[ \t]*(?:#.*)?")  # a blank line or a comment (`#` first)
_COMMENT = re.compile(r"[ \t]#")  # where a comment starts in an unquoted value
_DOUBLE_STOP = re.compile(r'["\\]')
_ESCAPES = {"n": "\n", "t": "\t", "r": "\r", "\\": "\\", '"': '"', "$": "$", "'": "'"}

EXPECTED = "expected NAME=VALUE"
BAD_NAME = f"{EXPECTED}: a NAME is letters, digits, '_', '.' and '-', first a letter or '_'"
NEVER_CLOSED = "the quote is never closed"
AFTER_QUOTE = "text after the closing quote"


class NotText(ValueError):
    """The whole file cannot be read as .env text (the message says why)."""


@dataclass(frozen=True)
class BadLine:
    """A line that is no assignment, comment or blank; ``why`` never quotes the file."""

    line: int
    why: str

    def __str__(self) -> str:
        return f"line {self.line}: {self.why}"


class Parsed(NamedTuple):
    variables: dict[str, str]  # a later NAME replaces an earlier one, as in a shell
    bad: list[BadLine]  # in file order; a caller that is not told to skip them refuses the file


def parse(data: bytes) -> Parsed:
    """Every variable the file assigns, and every line that did not parse.

    A bad line is passed over and the next line read: an unclosed quote is reported at the
    line it opens on, and the lines after it are read as lines again.
    """
    text = _text(data)
    variables: dict[str, str] = {}
    bad: list[BadLine] = []
    pos, number = 0, 1
    while pos < len(text):
        end = text.find("\n", pos)
        end = len(text) if end < 0 else end
        after = end + 1  # where the next line starts, unless a quoted value spans lines
        line = text[pos:end]
        if not _SKIP.fullmatch(line):
            match = _ASSIGN.match(line)
            if match is None:
                why = BAD_NAME if "=" in line.split("#", 1)[0] else EXPECTED
                bad.append(BadLine(number, why))
            elif line[match.end() : match.end() + 1] in ("'", '"'):
                quoted = _quoted(text, pos + match.end())
                if isinstance(quoted, str):
                    bad.append(BadLine(number, quoted))
                else:
                    value, close = quoted
                    stop = text.find("\n", close)
                    stop = len(text) if stop < 0 else stop
                    if _SKIP.fullmatch(text, close, stop):
                        variables[match["name"]] = value
                    else:
                        bad.append(BadLine(number, AFTER_QUOTE))
                    after = stop + 1
            else:
                value = _COMMENT.split(line[match.end() :], maxsplit=1)[0]
                variables[match["name"]] = value.rstrip(" \t")
        number += text.count("\n", pos, after)
        pos = after
    return Parsed(variables, bad)


def _text(data: bytes) -> str:
    try:
        text = data.decode("utf-8-sig")  # one byte order mark at the start is dropped
    except UnicodeDecodeError:
        raise NotText("is not UTF-8 text") from None
    if "\x00" in text:
        raise NotText("holds a NUL byte: it is not a text file")
    return text.replace("\r\n", "\n")


def _quoted(text: str, start: int) -> tuple[str, int] | str:
    """The value quoted at ``start`` and the index after its closing quote, or why not."""
    if text[start] == "'":  # literal up to the next single quote, newlines included
        close = text.find("'", start + 1)
        return NEVER_CLOSED if close < 0 else (text[start + 1 : close], close + 1)
    parts: list[str] = []
    pos = start + 1
    while True:
        stop = _DOUBLE_STOP.search(text, pos)
        if stop is None:
            return NEVER_CLOSED
        at = stop.start()
        parts.append(text[pos:at])
        if text[at] == '"':
            return "".join(parts), at + 1
        if at + 1 == len(text):  # a backslash at the very end escapes nothing
            return NEVER_CLOSED
        escaped = text[at + 1]
        parts.append(_ESCAPES.get(escaped, "\\" + escaped))  # an unknown escape stays as written
        pos = at + 2


def quote(value: str) -> str:
    """``value`` as a .env value that :func:`parse` reads back exactly (no NUL allowed):
    single quotes (literal) when it has no single quote, backslash or carriage return, else
    double quotes with backslash escapes (``$`` too, for readers that expand variables)."""
    if "'" not in value and "\\" not in value and "\r" not in value:
        return "'" + value + "'"
    escaped = (
        value.replace("\\", "\\\\")
        .replace('"', '\\"')
        .replace("\n", "\\n")
        .replace("\r", "\\r")
        .replace("$", "\\$")
    )
    return '"' + escaped + '"'
