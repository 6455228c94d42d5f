"""Coverage-guided fuzzing: one harness module per target, each with a pure
``one_input(data: bytes) -> None`` (see README.md here; ``scripts/fuzz`` runs them)."""
