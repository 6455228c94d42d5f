"""Errors of imports and exports."""

from __future__ import annotations

from polykey.errors import PolykeyError


class ImportFailed(PolykeyError):
    """Import failed."""

    exit_code = 60
    hint = "Nothing was written. Fix the entry, or add --skip-bad to import the rest."


class MalformedSource(ImportFailed):
    """Cannot read the import source."""

    hint = "Nothing was written; check that the file is the format the command names."


class ExportFailed(PolykeyError):
    """Export failed."""

    exit_code = 61


class ToolMissing(PolykeyError):
    """A program this command needs is not installed."""

    exit_code = 62


class WrongSourcePassword(PolykeyError):
    """The password (or key file) does not open that file."""

    exit_code = 63
    hint = "Give the file's own password with --source-password-file or PK_SOURCE_PASSWORD."
