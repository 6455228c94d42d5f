"""The encrypted node file: one SQLite file of sealed records (docs/spec/node-file.md)."""
