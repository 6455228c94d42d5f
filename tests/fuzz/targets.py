"""The fuzz targets: name -> harness module (tests/fuzz/<name>.py, each with ``one_input``),
and where each keeps its corpus and its crashes."""

from __future__ import annotations

import contextlib
import importlib
import signal
from collections.abc import Callable, Iterator
from pathlib import Path
from types import FrameType

HERE = Path(__file__).resolve().parent
CORPUS = HERE / "corpus"  # what the fuzzers keep: rewritten (merged, capped) by every run
REGRESSIONS = HERE / "regressions"  # inputs of fixed findings: kept as they are, for good
CRASHES = HERE / "crashes"
FINDINGS = CRASHES / "findings.toml"

TARGETS = (
    "agent_frame",
    "peer_frame",
    "peer_methods",
    "node_header",
    "pack_reader",
    "validate",
    "import_pass",
    "import_bitwarden",
    "import_csv",
    "import_dotenv",
    "import_json",
    "import_1pux",
    "import_keepass",
    "layout",
)

# Modules (besides polykey and the harness) whose Python code the fuzzer should see branch on.
INSTRUMENT: dict[str, tuple[str, ...]] = {
    "validate": ("dulwich",),
    "peer_methods": ("dulwich",),
    "import_1pux": ("zipfile",),
    "import_csv": ("csv",),
}

# Inputs larger than this are not tried: parsers' interesting states are reached by small inputs,
# and small inputs keep the corpus small.
MAX_LEN: dict[str, int] = {"pack_reader": 8192, "import_1pux": 8192, "validate": 8192}
DEFAULT_MAX_LEN = 4096


def one_input(name: str) -> Callable[[bytes], None]:
    if name not in TARGETS:
        raise KeyError(f"no fuzz target {name!r}; the targets are {', '.join(TARGETS)}")
    module = importlib.import_module(f"tests.fuzz.{name}")
    run: Callable[[bytes], None] = module.one_input
    return run


def corpus_files(name: str, root: Path = CORPUS) -> list[Path]:
    folder = root / name
    return sorted(p for p in folder.iterdir() if p.is_file()) if folder.is_dir() else []


HANG_SECONDS = 2.0  # CPU seconds one input may take before it counts as a hang (inputs take ms)
_SAMPLES = 8  # stacks looked at, 20 ms of CPU apart, to find the call that loops


class Hang(Exception):
    """An input ran longer than its CPU-time limit: a hang (or a quadratic blow-up).
    ``where`` is the innermost call of polykey that stayed on the stack while it was watched
    (the one looping), as ``file.py:function``."""

    def __init__(self, message: str, where: str) -> None:
        super().__init__(message)
        self.where = where


def _polykey_stack(frame: FrameType | None) -> list[FrameType]:
    """Polykey's frames, outermost first."""
    out = []
    while frame is not None:
        if "/polykey/" in frame.f_code.co_filename:
            out.append(frame)
        frame = frame.f_back
    return out[::-1]


def _label(frame: FrameType) -> str:
    return f"{Path(frame.f_code.co_filename).name}:{frame.f_code.co_name}"


@contextlib.contextmanager
def deadline(seconds: float = HANG_SECONDS) -> Iterator[None]:
    """Raise :class:`Hang` in the code running once ``seconds`` of CPU time have passed (CPU
    time, so that a loaded machine does not make slow inputs look like hangs; SIGVTALRM, so
    that libFuzzer's own -timeout alarm, SIGALRM, is left alone). Main thread only."""
    samples: list[list[FrameType]] = []

    def expired(signum: int, frame: FrameType | None) -> None:
        samples.append(_polykey_stack(frame))
        if len(samples) < _SAMPLES:
            signal.setitimer(signal.ITIMER_VIRTUAL, 0.02)
            return
        common = samples[0]  # the calls (the same frames, not only functions) never left
        for stack in samples[1:]:
            n = 0
            while n < min(len(common), len(stack)) and common[n] is stack[n]:
                n += 1
            common = common[:n]
        where = _label(common[-1]) if common else "outside polykey"
        samples.clear()
        raise Hang(f"more than {seconds:g} s of CPU time, looping in {where}", where)

    previous = signal.signal(signal.SIGVTALRM, expired)
    signal.setitimer(signal.ITIMER_VIRTUAL, seconds)
    try:
        yield
    finally:
        signal.setitimer(signal.ITIMER_VIRTUAL, 0)
        signal.signal(signal.SIGVTALRM, previous)
