"""Replay the fuzzers' corpora and findings (tests/fuzz/README.md), in CI.

Every corpus input of every target, and every input of a fixed finding (regressions/), must
pass its harness: what the fuzzer once found interesting stays handled. Every finding not yet
fixed is a crash input in tests/fuzz/crashes/<target>/ described in crashes/findings.toml; it
is replayed as a strict xfail of its exception type (a hang is ``targets.Hang``, raised here
after 1 s of CPU), so the fix turns it into a failure that says so: whoever fixes it moves the
input into tests/fuzz/regressions/<target>/ and its entry into the [[fixed]] list.
"""

from __future__ import annotations

import builtins
import tomllib
from typing import Any

import pytest

from polykey.errors import PolykeyError
from tests.fuzz import targets
from tests.fuzz.targets import (
    CRASHES,
    FINDINGS,
    REGRESSIONS,
    TARGETS,
    corpus_files,
    deadline,
    one_input,
)

HANG_REPLAY_SECONDS = 1.0  # a hang's input is stopped this soon here (CI time is short)
CORPUS_SECONDS = 10.0  # a corpus input taking longer (CPU) is a hang (they take milliseconds)


def _findings(kind: str = "finding") -> list[dict[str, Any]]:
    """The open findings (``finding``) or the fixed ones (``fixed``) of crashes/findings.toml."""
    if not FINDINGS.exists():
        return []
    entries: list[dict[str, Any]] = tomllib.loads(FINDINGS.read_text()).get(kind, [])
    return entries


def _exception(name: str) -> type[BaseException]:
    """A builtin exception, one of tests/fuzz/targets.py (``Hang``), or of Polykey's."""
    found = getattr(builtins, name, None) or getattr(targets, name, None)
    found = found or _polykey_errors().get(name)
    assert isinstance(found, type) and issubclass(found, BaseException), name
    return found


@pytest.mark.parametrize("target", TARGETS)
def test_the_corpus_passes(target: str) -> None:
    files = corpus_files(target)
    assert files, f"tests/fuzz/corpus/{target}/ is empty: run scripts/fuzz --seed"
    files += corpus_files(target, REGRESSIONS)
    run = one_input(target)
    failures = []
    for path in files:
        try:
            with deadline(CORPUS_SECONDS):
                run(path.read_bytes())
        except Exception as exc:
            failures.append(f"{path.name}: {type(exc).__name__}: {str(exc)[:200]}")
    assert not failures, f"{target}: corpus inputs fail:\n" + "\n".join(failures)


def _polykey_errors() -> dict[str, type[BaseException]]:
    """Polykey's exceptions by name (some findings are a refusal that should not happen)."""
    import polykey.vaults.paths  # noqa: F401 - defines InvalidSecretPath

    out: dict[str, type[BaseException]] = {}
    todo: list[type[BaseException]] = [PolykeyError]
    while todo:
        cls = todo.pop()
        out[cls.__name__] = cls
        todo.extend(cls.__subclasses__())
    return out


def _finding_params() -> list[Any]:
    params = []
    for f in _findings():
        mark = pytest.mark.xfail(
            strict=True, raises=_exception(f["exception"]), reason=f["summary"]
        )
        params.append(pytest.param(f, marks=mark, id=f"{f['target']}/{f['input']}"))
    return params


@pytest.mark.parametrize("finding", _finding_params())
def test_a_finding_not_yet_fixed_still_fails(finding: dict[str, Any]) -> None:
    """XPASS (a failure, being strict) means the bug is fixed: move the input to the corpus."""
    path = CRASHES / finding["target"] / finding["input"]
    with deadline(HANG_REPLAY_SECONDS):
        one_input(finding["target"])(path.read_bytes())


def test_every_crash_input_is_a_described_finding() -> None:
    described = {(f["target"], f["input"]) for f in _findings()}
    for f in _findings():
        assert f["target"] in TARGETS, f
        assert (CRASHES / f["target"] / f["input"]).is_file(), f"{f['input']} is missing"
        assert f.get("summary") and f.get("fix") and f.get("exception"), f
    on_disk = (
        {
            (folder.name, path.name)
            for folder in CRASHES.iterdir()
            if folder.is_dir()
            for path in folder.iterdir()
            if path.is_file()
        }
        if CRASHES.is_dir()
        else set()
    )
    undescribed = sorted(on_disk - described)
    assert not undescribed, f"crash inputs without an entry in {FINDINGS}: {undescribed}"


def test_every_fixed_finding_keeps_its_input_as_a_regression() -> None:
    for f in _findings("fixed"):
        assert (REGRESSIONS / f["target"] / f["input"]).is_file(), f
        assert f.get("summary") and f.get("fixed_by"), f
