#!/usr/bin/env python3
"""Coverage-guided fuzzing of Polykey's parsers (tests/fuzz/README.md): outside CI, by hand.

    scripts/fuzz --seed                       write the seed inputs into the corpora
    scripts/fuzz --time 300 validate          fuzz one target for 5 minutes
    scripts/fuzz --time 60                    every target, one minute each, one after another
    scripts/fuzz --minimise validate          only merge and cap the target's corpus
    scripts/fuzz --engine hypothesis ...      without atheris (no coverage guidance)

Each target's corpus is tests/fuzz/corpus/<target>/; a run works on a copy under
$PK_FUZZ_WORK (default /tmp/pk-fuzz), then merges what it found back, minimised by coverage
(libFuzzer's -merge) and capped (--max-files, --max-bytes). Crashes, hangs and memory blow-ups
are written to tests/fuzz/crashes/<target>/; an input taking more than 2 s of CPU is a hang,
raised as targets.Hang in the code it was running, and written as a crash. A crash already
there is known: while fuzzing, an input failing the same way (exception type, innermost
function, message) is passed over, so the fuzzer goes on looking for others; a new one ends
the run of that target, which starts again with the time left (at most --restarts times).
The inputs of fixed findings (tests/fuzz/regressions/<target>/) join the corpus a run starts
from. Each run appends a line to tests/fuzz/runs.tsv.
"""

from __future__ import annotations

import argparse
import datetime
import hashlib
import importlib.util
import logging
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from tests.fuzz.targets import (  # noqa: E402 - the project root must be importable first
    CORPUS,
    CRASHES,
    DEFAULT_MAX_LEN,
    INSTRUMENT,
    MAX_LEN,
    REGRESSIONS,
    TARGETS,
    Hang,
    corpus_files,
    deadline,
)

WORK = Path(os.environ.get("PK_FUZZ_WORK", "/tmp/pk-fuzz"))
RUNS = ROOT / "tests" / "fuzz" / "runs.tsv"
ARTIFACT = re.compile(r"^(crash|timeout|oom|leak)-[0-9a-f]+$")  # findings libFuzzer writes
UNSAFE = ("timeout-", "oom-", "leak-", "slow-unit-")  # artifacts not to run again
KNOWN_HANG_SECONDS = 3.0  # a known hang's input is stopped this soon when its signature is made

# Tokens the fuzzer may splice in (libFuzzer -dict): the words the parsers look for.
_JSON = ['"{"', '"}"', '"["', '"]"', '":"', '","', '"\\""', '"null"', '"true"', '"1e999"']
_JSON += ['"\\\\ud800"', '"\\\\u0000"', '"[[[[[[[[[[[[[[[["']
_RPC = ['"\\"jsonrpc\\""', '"\\"2.0\\""', '"\\"method\\""', '"\\"params\\""', '"\\"id\\""']
_RPC += ['"\\"$b64\\""', '"\\"result\\""', '"\\"error\\""', '"\\"token\\""', '"\\"raw\\""']
_RPC += ['"\\"peer.hello\\""', '"\\"version\\""', '"\\"data\\""', '"\\"message\\""']
_PEER = ['"\\"vault\\""', '"\\"haves\\""', '"\\"head\\""', '"\\"objects\\""', '"\\"work\\""']
_PEER += ['"\\"vaults.receive\\""', '"\\"vaults.fetch\\""', '"\\"other\\""']
_ITEMS = ['"\\"items\\""', '"\\"folders\\""', '"\\"login\\""', '"\\"uris\\""', '"\\"fields\\""']
_ITEMS += ['"\\"name\\""', '"\\"value\\""', '"\\"type\\""', '"\\"folderId\\""', '"\\"card\\""']
_ITEMS += ['"\\"identity\\""', '"\\"sshKey\\""', '"\\"collections\\""', '"\\"collectionIds\\""']
_ITEMS += ['"\\"totp\\""', '"\\"notes\\""', '"\\"password\\""', '"\\"username\\""']
_1PUX = ['"\\"accounts\\""', '"\\"vaults\\""', '"\\"attrs\\""', '"\\"overview\\""']
_1PUX += ['"\\"details\\""', '"\\"loginFields\\""', '"\\"sections\\""', '"\\"designation\\""']
_1PUX += ['"\\"documentAttributes\\""', '"\\"documentId\\""', '"\\"fileName\\""', '"\\"tags\\""']
_1PUX += ['"\\"trashed\\""', '"\\"monthYear\\""', '"\\"date\\""', '"\\"address\\""', '"files/"']
_1PUX += ['"\\"notesPlain\\""', '"\\"file\\""', '"\\"urls\\""', '"\\"title\\""', '"\\"item\\""']
_HEADER = ['"\\"magic\\""', '"\\"polykey-node\\""', '"\\"format\\""', '"\\"kdf\\""']
_HEADER += ['"\\"argon2id\\""', '"\\"memory_kib\\""', '"\\"iterations\\""', '"\\"lanes\\""']
_HEADER += ['"\\"salt\\""', '"\\"recovery\\""', '"\\"password\\""', '"19"', '"4194304"']
_PATHS = ['"/"', '"%"', '"%2F"', '"."', '".."', '".git"', '"con"', '"nul.txt"', '"title"']
_PATHS += ['"attachments"', '"password"', '"notes"', '"otp"', '"\\xc3\\xa9"', '"\\x00\\xff"']
_PASS = ['"\\x0a"', '": "', '"otpauth://totp/"', '"username: "', '"url: "', '"password"']
_PASS += ['"title"', '"notes"', '"otp"', '"/"', '"\\x00\\xff"', '"\\x00"']
_CSV = ['","', '"\\x0a"', '"\\""', '"name"', '"url"', '"username"', '"password"', '"folder"']
_CSV += ['"totp"', '"grouping"', '"login_uri"', '"\\xef\\xbb\\xbf"']
_ENV = ['"export "', '"="', '"\\""', '"\'"', '"#"', '"\\\\n"', '"\\x0a"', '"\\x0d\\x0a"']
_GIT = ['"tree "', '"parent "', '"author "', '"committer "', '"gpgsig "', '"\\x0a\\x0a"']
_GIT += ['"-----BEGIN SSH SIGNATURE-----"', '"-----END SSH SIGNATURE-----"', '"SSHSIG"']
_GIT += ['"ssh-ed25519"', '"sha512"', '".polykey-tags"', '".polykey-dir"', '"100644 "']
_XML = ['"<Group>"', '"</Group>"', '"<Entry>"', '"</Entry>"', '"<String>"', '"</String>"']
_XML += ['"<Key>"', '"</Key>"', '"<Value>"', '"</Value>"', '"<Name>"', '"</Name>"', '"<UUID>"']
_XML += ['"<Binary>"', '"</Binary>"', '"<Value Ref=\\"0\\"/>"', '"<Tags>"', '"</Tags>"']
_XML += ['"Title"', '"UserName"', '"Password"', '"URL"', '"Notes"', '"otp"', '"Recycle Bin"']
_PACK = ['"PACK"', '"\\x00\\x00\\x00\\x02"', '"\\x78\\x9c"', '"\\x78\\x01"', '"\\x80\\x80"']
DICTS: dict[str, list[str]] = {
    "agent_frame": _JSON + _RPC,
    "peer_frame": _JSON + _RPC + _PEER,
    "peer_methods": _JSON + _RPC + _PEER,
    "node_header": _JSON + _HEADER,
    "pack_reader": _PACK,
    "validate": _GIT,
    "import_pass": _PASS,
    "import_bitwarden": _JSON + _ITEMS,
    "import_csv": _CSV,
    "import_dotenv": _ENV,
    "import_json": [*_JSON, '"\\"polykey-export\\""', '"\\"secrets\\""', '"\\"base64\\""'],
    "import_1pux": _JSON + _1PUX,
    "import_keepass": _XML + _PATHS,
    "layout": _PATHS,
}


# --- what a failure is: known findings are told apart by where they fail --------------------


_QUOTED = re.compile(r"'(?:[^'\\]|\\.)*'|\"(?:[^\"\\]|\\.)*\"")


def signature(exc: BaseException) -> str:
    """How a failure is told from others: the exception's type, the innermost function of the
    project (polykey or the harness) it came through, and its message with the quoted values
    and numbers left out (line numbers are not used: atheris's instrumentation blurs them).
    For a hang, the call that loops."""
    if isinstance(exc, Hang):
        return f"Hang in {exc.where}"
    frames = traceback.extract_tb(exc.__traceback__)
    ours = [f for f in frames if "/polykey/" in f.filename or "/tests/fuzz/" in f.filename]
    where = (ours or frames)[-1] if (ours or frames) else None
    place = f" at {Path(where.filename).name}:{where.name}" if where is not None else ""
    message = re.sub(r"\d+", "#", _QUOTED.sub("…", str(exc)))[:80]
    return f"{type(exc).__name__}{place}: {message}"


def known_signatures(target: str, one_input: Callable[[bytes], None]) -> set[str]:
    """The signatures of the target's crash files (not hangs libFuzzer caught, nor memory
    blow-ups: those cannot be run again safely), by running each once."""
    found: set[str] = set()
    folder = CRASHES / target
    if not folder.is_dir():
        return found
    for path in sorted(folder.iterdir()):
        if not path.is_file() or path.suffix or path.name.startswith(UNSAFE):
            continue
        try:
            with deadline(KNOWN_HANG_SECONDS):
                one_input(path.read_bytes())
        except Exception as exc:
            found.add(signature(exc))
    return found


# --- the child: one target under atheris --------------------------------------------------------


def _quiet_logs() -> None:
    """Polykey's log lines (a refused input logs a warning) would drown the fuzzer's output."""
    for name in ("polykey", "asyncio"):
        logger = logging.getLogger(name)
        logger.propagate = False
        logger.addHandler(logging.NullHandler())


def child(target: str, libfuzzer_args: list[str]) -> None:
    import atheris  # type: ignore[import-untyped]

    _quiet_logs()
    include = ["polykey", "tests.fuzz", *INSTRUMENT.get(target, ())]
    with atheris.instrument_imports(include=include):
        from tests.fuzz.targets import one_input as load

        one_input = load(target)
    # PK_FUZZ_KNOWN=0 (for -minimize_crash): every crash counts, known or not
    known = known_signatures(target, one_input) if os.environ.get("PK_FUZZ_KNOWN") != "0" else set()
    if known:
        print(f"#  passing over {len(known)} known finding(s): {sorted(known)}", flush=True)

    def test(data: bytes) -> None:
        try:
            with deadline():
                one_input(data)
        except Exception as exc:
            if signature(exc) in known:
                return
            raise

    # libFuzzer starts itself again for -merge: argv[0] must be the wrapper that leads here
    self = os.environ.get("PK_FUZZ_SELF", sys.argv[0])
    atheris.Setup([self, *libfuzzer_args], test)
    atheris.Fuzz()


# --- the parent: runs, merging, bookkeeping ---------------------------------------------------


def _child_argv(target: str, args: list[str]) -> list[str]:
    """The command of a child fuzzing ``target``: a small executable script, because libFuzzer
    runs its own argv[0] again (for -merge) with nothing but its own flags."""
    wrapper = WORK / f"run-{target}"
    wrapper.parent.mkdir(parents=True, exist_ok=True)
    me = Path(__file__).resolve()
    wrapper.write_text(
        f'#!/bin/sh\nPK_FUZZ_SELF="$0" exec "{sys.executable}" "{me}" --child {target} -- "$@"\n'
    )
    wrapper.chmod(0o755)
    return [str(wrapper), *args]


def _dict_file(target: str) -> Path:
    path = WORK / f"{target}.dict"
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text("".join(f"{token}\n" for token in DICTS.get(target, [])))
    return path


def _nice() -> list[str]:
    return ["nice", "-n", "19"] if shutil.which("nice") else []


def _stats(log: str) -> dict[str, int]:
    out: dict[str, int] = {}
    for key in ("number_of_executed_units", "peak_rss_mb"):
        m = re.search(rf"stat::{key}:\s*(\d+)", log)
        if m:
            out[key] = int(m.group(1))
    if "number_of_executed_units" not in out:
        runs = re.findall(r"^#(\d+)\s", log, re.MULTILINE)
        if runs:
            out["number_of_executed_units"] = int(runs[-1])
    return out


def _artifacts(target: str) -> set[str]:
    folder = CRASHES / target
    return (
        {p.name for p in folder.iterdir() if ARTIFACT.match(p.name)} if folder.is_dir() else set()
    )


def fuzz_atheris(target: str, seconds: int, restarts: int, log_to: Any) -> dict[str, Any]:
    work = WORK / target / "corpus"
    if work.exists():
        shutil.rmtree(work)
    work.mkdir(parents=True)
    for path in corpus_files(target) + corpus_files(target, REGRESSIONS):
        shutil.copy(path, work / path.name)
    crashes = CRASHES / target
    crashes.mkdir(parents=True, exist_ok=True)
    before = _artifacts(target)
    execs, spent, started = 0, 0.0, time.monotonic()
    for _ in range(restarts + 1):
        left = int(seconds - (time.monotonic() - started))
        if left < 5:
            break
        args = [
            f"-max_total_time={left}",
            f"-max_len={MAX_LEN.get(target, DEFAULT_MAX_LEN)}",
            "-timeout=60",  # wall time, a backstop: a hang is 2 s of CPU (targets.deadline)
            "-rss_limit_mb=3072",
            f"-artifact_prefix={crashes}/",
            "-print_final_stats=1",
            "-reduce_inputs=1",
            "-report_slow_units=3600",  # slow inputs are hangs, raised by targets.deadline
            *([f"-dict={_dict_file(target)}"] if DICTS.get(target) else []),
            str(work),
        ]
        t0 = time.monotonic()
        proc = subprocess.run(
            [*_nice(), *_child_argv(target, args)],
            cwd=ROOT,
            capture_output=True,
            text=True,
            errors="replace",
            check=False,
        )
        spent += time.monotonic() - t0
        log_to.write(proc.stdout + proc.stderr)
        log_to.flush()
        execs += _stats(proc.stderr).get("number_of_executed_units", 0)
        if proc.returncode == 0:
            break
        new = _artifacts(target) - before
        if not new:  # not a finding: the harness or the fuzzer itself failed
            print(proc.stderr[-3000:], file=sys.stderr)
            break
        if any(not n.startswith("crash-") for n in new):
            break  # a hang or a memory blow-up: cannot be passed over, stop here
        print(f"  {target}: new finding(s) {sorted(new)}; going on", flush=True)
    found = sorted(_artifacts(target) - before)
    return {"seconds": round(spent), "execs": execs, "new_findings": found, "work": work}


def merge(target: str, work: Path | None, max_files: int, max_bytes: int, log_to: Any) -> None:
    """The corpus becomes a coverage-minimal merge of itself and ``work``, capped."""
    folder = CORPUS / target
    folder.mkdir(parents=True, exist_ok=True)
    out = Path(tempfile.mkdtemp(prefix=f"{target}-merge-", dir=WORK))
    sources = [str(folder)] + ([str(work)] if work is not None and work.is_dir() else [])
    args = ["-merge=1", "-timeout=60", f"-max_len={MAX_LEN.get(target, DEFAULT_MAX_LEN)}"]
    args += [str(out), *sources]
    proc = subprocess.run(
        [*_nice(), *_child_argv(target, args)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        errors="replace",
        check=False,
    )
    log_to.write(proc.stdout + proc.stderr)
    kept = sorted((p for p in out.iterdir() if p.is_file()), key=lambda p: p.stat().st_size)
    if proc.returncode != 0 or not kept:
        print(f"  {target}: merge failed; the corpus is unchanged", file=sys.stderr)
        print(proc.stderr[-2000:], file=sys.stderr)
        shutil.rmtree(out)
        return
    total, chosen = 0, list[Path]()
    for path in kept:  # the smallest first: they cover the most per byte
        size = path.stat().st_size
        if len(chosen) >= max_files or total + size > max_bytes:
            break
        chosen.append(path)
        total += size
    for old in folder.iterdir():
        old.unlink()
    for path in chosen:
        data = path.read_bytes()
        (folder / hashlib.sha1(data).hexdigest()).write_bytes(data)
    shutil.rmtree(out)


def drop_failing(target: str) -> int:
    """Remove corpus inputs that fail (the fuzzer passes over known findings, and keeps inputs
    reaching them): the corpus replayed in CI must pass. In a child process, so that this
    process imports no harness."""
    proc = subprocess.run(
        [*_nice(), sys.executable, __file__, "--drop-failing", target],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=False,
    )
    if proc.returncode != 0:
        print(proc.stderr[-2000:], file=sys.stderr)
        return 0
    return int(proc.stdout.strip().splitlines()[-1])


def _drop_failing_here(target: str) -> int:
    from tests.fuzz.targets import one_input as load

    _quiet_logs()
    one_input = load(target)
    dropped = 0
    for path in corpus_files(target):
        try:
            with deadline(KNOWN_HANG_SECONDS):
                one_input(path.read_bytes())
        except Exception:
            path.unlink()
            dropped += 1
    return dropped


def corpus_size(target: str) -> tuple[int, int]:
    files = corpus_files(target)
    return len(files), sum(p.stat().st_size for p in files)


# --- without atheris: hypothesis, mutating the corpus ---------------------------------------------


BATCH = 2000  # examples per hypothesis run (the runs repeat until the time is spent)


def fuzz_hypothesis(target: str, seconds: int, log_to: Any) -> dict[str, Any]:
    from hypothesis import HealthCheck, given, settings
    from hypothesis import strategies as st
    from tests.fuzz.targets import one_input as load

    _quiet_logs()
    one_input = load(target)
    known = known_signatures(target, one_input)
    seeds = [p.read_bytes() for p in corpus_files(target)] or [b""]
    limit = MAX_LEN.get(target, DEFAULT_MAX_LEN)

    @st.composite
    def mutated(draw: Any) -> bytes:
        data = bytearray(draw(st.sampled_from(seeds)))
        for _ in range(draw(st.integers(0, 8))):
            op, at = draw(st.integers(0, 3)), draw(st.integers(0, len(data)))
            if op == 0:
                data[at:at] = draw(st.binary(max_size=16))
            elif op == 1:
                del data[at : at + draw(st.integers(1, 16))]
            elif op == 2 and at < len(data):
                data[at] = draw(st.integers(0, 255))
            else:
                data[at:at] = data[: draw(st.integers(0, 64))]
        return bytes(data[:limit])

    counter = {"execs": 0}
    new: list[str] = []

    @settings(
        max_examples=BATCH,
        deadline=None,
        database=None,
        suppress_health_check=list(HealthCheck),
    )
    @given(st.one_of(mutated(), st.binary(max_size=limit)))
    def run(data: bytes) -> None:
        if time.monotonic() > stop:
            return  # the batch runs out quickly; raising would make hypothesis replay it
        counter["execs"] += 1
        try:
            with deadline():
                one_input(data)
        except Exception as exc:
            sig = signature(exc)
            if sig in known:
                return
            known.add(sig)
            name = "crash-" + hashlib.sha1(data).hexdigest()  # a name, not a digest to trust
            (CRASHES / target).mkdir(parents=True, exist_ok=True)
            (CRASHES / target / name).write_bytes(data)
            new.append(name)
            log_to.write(f"{name}: {sig}\n{traceback.format_exc()}\n")

    started = time.monotonic()
    stop = started + seconds
    while time.monotonic() < stop:  # batches: failures are caught above, none ends a batch
        run()
    spent = round(time.monotonic() - started)
    return {"seconds": spent, "execs": counter["execs"], "new_findings": new, "work": None}


def minimise_crash(target: str, path: Path, seconds: int) -> int:
    """libFuzzer's -minimize_crash: the smallest input failing as ``path`` does, written next
    to it as ``min-<name>`` (then rename it and describe it in findings.toml)."""
    args = [
        "-minimize_crash=1",
        f"-max_total_time={seconds}",
        f"-exact_artifact_path={path.parent / ('min-' + path.name)}",
        str(path),
    ]
    env = {**os.environ, "PK_FUZZ_KNOWN": "0"}
    command = [*_nice(), *_child_argv(target, args)]
    return subprocess.run(command, cwd=ROOT, env=env, check=False).returncode


# --- the command line -------------------------------------------------------------------------


def seed() -> None:
    from tests.fuzz.seeds import SEEDS

    for target in TARGETS:
        folder = CORPUS / target
        folder.mkdir(parents=True, exist_ok=True)
        for data in SEEDS[target]():
            (folder / hashlib.sha1(data).hexdigest()).write_bytes(
                data
            )  # a name, not a digest to trust
        print(f"{target}: {len(corpus_files(target))} corpus files")


def record(target: str, engine: str, result: dict[str, Any]) -> None:
    files, size = corpus_size(target)
    now = datetime.datetime.now(datetime.UTC).isoformat(timespec="seconds")
    if not RUNS.exists():
        RUNS.write_text(
            "date\ttarget\tengine\tseconds\texecutions\tcorpus_files\tcorpus_bytes\tnew\n"
        )
    line = [now, target, engine, result["seconds"], result["execs"], files, size]
    line.append(",".join(result["new_findings"]) or "-")
    with RUNS.open("a") as f:
        f.write("\t".join(str(x) for x in line) + "\n")
    print(
        f"{target}: {result['seconds']} s, {result['execs']} executions, corpus {files} files "
        f"({size} bytes), new findings: {', '.join(result['new_findings']) or 'none'}",
        flush=True,
    )


def main() -> int:
    if len(sys.argv) > 2 and sys.argv[1] == "--child":
        child(sys.argv[2], sys.argv[4:] if sys.argv[3:4] == ["--"] else sys.argv[3:])
        return 0
    if len(sys.argv) > 2 and sys.argv[1] == "--drop-failing":
        print(_drop_failing_here(sys.argv[2]))
        return 0
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("targets", nargs="*", help=f"default: all ({', '.join(TARGETS)})")
    parser.add_argument("--time", type=int, default=60, help="seconds per target (default 60)")
    parser.add_argument("--engine", choices=("atheris", "hypothesis"), default=None)
    parser.add_argument("--seed", action="store_true", help="write the seed inputs and stop")
    parser.add_argument("--minimise", action="store_true", help="only merge and cap the corpus")
    parser.add_argument("--max-files", type=int, default=200)
    parser.add_argument("--max-bytes", type=int, default=2 * 1024 * 1024)
    parser.add_argument("--restarts", type=int, default=5, help="after new findings")
    parser.add_argument("--log", type=Path, default=None, help="the fuzzer's own output")
    parser.add_argument(
        "--minimise-crash", type=Path, metavar="FILE", help="shrink a crash input of TARGET"
    )
    args = parser.parse_args()
    if args.seed:
        seed()
        return 0
    if args.minimise_crash:
        return minimise_crash(args.targets[0], args.minimise_crash, args.time)
    unknown = [t for t in args.targets if t not in TARGETS]
    if unknown:
        parser.error(f"no target {unknown[0]!r}; the targets are {', '.join(TARGETS)}")
    engine = args.engine
    if engine is None:
        if importlib.util.find_spec("atheris") is None:
            engine = "hypothesis"
            print("atheris is not installed: hypothesis it is (no coverage guidance)")
        else:
            engine = "atheris"
    WORK.mkdir(parents=True, exist_ok=True)
    log_path = args.log or WORK / "fuzz.log"
    with log_path.open("a") as log_to:
        for target in args.targets or TARGETS:
            if args.minimise:
                merge(target, None, args.max_files, args.max_bytes, log_to)
                drop_failing(target)
                print(f"{target}: corpus {corpus_size(target)}")
                continue
            print(f"{target}: {engine} for {args.time} s", flush=True)
            if engine == "atheris":
                result = fuzz_atheris(target, args.time, args.restarts, log_to)
                merge(target, result["work"], args.max_files, args.max_bytes, log_to)
            else:
                result = fuzz_hypothesis(target, args.time, log_to)
            dropped = drop_failing(target)
            if dropped:
                print(f"  {target}: {dropped} corpus inputs fail (known findings): left out")
            record(target, engine, result)
    return 0


if __name__ == "__main__":
    sys.exit(main())
