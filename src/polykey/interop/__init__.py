"""Moving in and out: importers and exporters for other secret managers' formats.

Every importer turns its source into :class:`~polykey.interop.layout.Entry` values, and every
exporter takes them back, so that one documented layout (docs/spec/entries.md) holds in vaults
whatever the data came from. This package only transforms data in memory and talks to the
external tools (gpg, KeePass files); writing to a vault goes through the agent's methods.
"""
