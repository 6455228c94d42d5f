"""The breach file: Have I Been Pwned's SHA-1 list, converted once into sorted fixed-width
records and looked up by binary search over a memory map (docs/spec/health.md).

``convert`` streams the ``HASH:COUNT`` text (any order, any size: sorted input makes one run;
otherwise runs of RUN_RECORDS are sorted, spilled to temporary files beside the target and
merged) into ``target`` (written under a temporary name and renamed into place). Each record is
the first ``width`` bytes of a SHA-1 digest (8 by default: a false positive once in about
2^64 / N lookups for a list of N hashes); counts are not kept. ``BreachFile`` opens one; a
lookup reads about log2(N) records.

The list is public data: nothing here is secret, and nothing of the node is written.
"""

from __future__ import annotations

import heapq
import mmap
import os
import re
import struct
import tempfile
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import BinaryIO

from polykey.errors import InvalidInput

MAGIC = b"PKBREACH"
VERSION = 1
HEADER = struct.Struct(">8sBB6sQ")  # magic, version, width, reserved (zero), count
DEFAULT_WIDTH = 8
MIN_WIDTH, MAX_WIDTH = 6, 20
RUN_RECORDS = 1 << 20  # records sorted in memory at a time (about 40 MiB as Python ints)
MERGE_FAN_IN = 64  # runs merged at once (open files)
FILE_NAME = "breaches.pkb"
"""The breach file's name, beside the node file unless a path is given."""

_LINE = re.compile(rb"([0-9A-Fa-f]{40}):[0-9]{1,20}\r?\n?")
_NTLM = re.compile(rb"[0-9A-Fa-f]{32}:[0-9]+\r?\n?")


class MalformedBreachList(InvalidInput):
    """The breach list is malformed."""

    hint = (
        "Give Have I Been Pwned's SHA-1 list (the downloader's default): one `HASH:COUNT` "
        "line each, 40 hex digits, a colon and the count."
    )


class BreachListUnreadable(InvalidInput):
    """The breach list cannot be read."""

    hint = "Give the path of Have I Been Pwned's SHA-1 list (pwnedpasswords.txt)."


class BreachFileMissing(InvalidInput):
    """No breach file."""

    hint = "Import Have I Been Pwned's SHA-1 list once: `pk health import-breaches FILE`."


class BreachFileDamaged(InvalidInput):
    """The breach file is damaged or not a breach file."""

    hint = "Make it again from the list: `pk health import-breaches FILE`."


@dataclass(frozen=True)
class Converted:
    path: str
    lines: int  # lines read (hashes, blank lines left out)
    records: int  # distinct records written
    width: int
    runs: int  # 1 when the list came sorted


# --- converting ---------------------------------------------------------------------------------


def convert(
    source: BinaryIO,
    target: Path,
    *,
    width: int = DEFAULT_WIDTH,
    run_records: int = RUN_RECORDS,
    fan_in: int = MERGE_FAN_IN,
) -> Converted:
    """Read the ``HASH:COUNT`` lines of ``source`` and write the breach file ``target``
    (replacing one there); MalformedBreachList names the first bad line, and nothing is
    written. ``run_records`` and ``fan_in``: see RUN_RECORDS and MERGE_FAN_IN."""
    if not MIN_WIDTH <= width <= MAX_WIDTH:
        raise ValueError(f"width must be {MIN_WIDTH}..{MAX_WIDTH}")
    target.parent.mkdir(parents=True, exist_ok=True)
    with tempfile.TemporaryDirectory(prefix=".breaches-", dir=target.parent) as work:
        runs, lines = _runs(source, width, Path(work), max(1, run_records))
        made, fan_in = len(runs), max(2, fan_in)
        while len(runs) > fan_in:  # merge in passes, so open files stay few
            group, runs = runs[:fan_in], runs[fan_in:]
            runs.append(_write_run(_merged(group, width), width, Path(work)))
        fd, tmp = tempfile.mkstemp(prefix=".breaches-", dir=target.parent)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(HEADER.pack(MAGIC, VERSION, width, bytes(6), 0))
                count = _write_records(out, _merged(runs, width), width)
                out.seek(0)
                out.write(HEADER.pack(MAGIC, VERSION, width, bytes(6), count))
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, target)
        except BaseException:
            Path(tmp).unlink(missing_ok=True)
            raise
    return Converted(str(target), lines, count, width, made)


def _runs(source: BinaryIO, width: int, work: Path, run_records: int) -> tuple[list[Path], int]:
    """Sorted runs of the list's records; one run while the input comes in order."""
    digits = 2 * width
    runs: list[Path] = []
    chunk: list[int] = []
    lines = 0
    in_order = True  # the chunk is in order and follows the open run
    run: BinaryIO | None = None
    last = -1  # the open run's last record
    try:
        for number, line in enumerate(source, 1):
            if _LINE.fullmatch(line) is None:
                if not line.strip():
                    continue
                raise MalformedBreachList(_why(line, number))
            lines += 1
            value = int(line[:digits], 16)
            in_order = in_order and value >= last
            last = value if in_order else last
            chunk.append(value)
            if len(chunk) >= run_records:
                run = _spill(chunk, run, in_order, runs, width, work)
                last, in_order, chunk = chunk[-1], True, []
        if chunk:
            run = _spill(chunk, run, in_order, runs, width, work)
    finally:
        if run is not None:
            run.close()
    return runs, lines


def _spill(
    chunk: list[int], run: BinaryIO | None, follows: bool, runs: list[Path], width: int, work: Path
) -> BinaryIO:
    """Add ``chunk`` (sorted here) to the open run when it ``follows`` it, else start a run."""
    if run is not None and not follows:
        run.close()
        run = None
    if run is None:
        fd, name = tempfile.mkstemp(prefix="run-", dir=work)
        run = os.fdopen(fd, "wb")
        runs.append(Path(name))
    chunk.sort()  # linear when the chunk is in order already
    _write_records(run, chunk, width)
    return run


def _write_run(records: Iterable[int], width: int, work: Path) -> Path:
    fd, name = tempfile.mkstemp(prefix="run-", dir=work)
    with os.fdopen(fd, "wb") as out:
        _write_records(out, records, width)
    return Path(name)


def _write_records(out: BinaryIO, records: Iterable[int], width: int) -> int:
    """Write ``records`` (sorted), each once; how many were written."""
    count, last, batch = 0, -1, []
    for value in records:
        if value == last:
            continue
        last = value
        batch.append(value.to_bytes(width, "big"))
        if len(batch) >= 65536:
            out.write(b"".join(batch))
            count += len(batch)
            batch = []
    out.write(b"".join(batch))
    return count + len(batch)


def _merged(runs: list[Path], width: int) -> Iterator[int]:
    return heapq.merge(*(_read_run(r, width) for r in runs))


def _read_run(path: Path, width: int) -> Iterator[int]:
    block = width * 65536
    with path.open("rb") as f:
        while data := f.read(block):
            for k in range(0, len(data), width):
                yield int.from_bytes(data[k : k + width], "big")
    path.unlink()


def _why(line: bytes, number: int) -> str:
    """Where and how a line is wrong; never the line (it could be anything)."""
    if _NTLM.fullmatch(line):
        return f"line {number} is an NTLM hash; the SHA-1 list is needed"
    if b":" not in line:
        return f"line {number} has no `:COUNT`"
    return f"line {number} is not `HASH:COUNT` (40 hex digits, a colon, a count)"


# --- looking up ---------------------------------------------------------------------------------


class BreachFile:
    """An open breach file: ``breached(sha1)`` by binary search over its memory map."""

    def __init__(self, path: Path) -> None:
        self.path = path
        try:
            f = path.open("rb")
        except FileNotFoundError:
            raise BreachFileMissing(str(path)) from None
        except OSError as exc:
            raise BreachFileMissing(f"{path} ({exc.strerror})") from None
        with f:
            size = os.fstat(f.fileno()).st_size
            head = f.read(HEADER.size)
            self.width, self.count = _check_header(head, size, path)
            self._map = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def __repr__(self) -> str:
        return f"BreachFile({str(self.path)!r}, {self.count} records)"

    def breached(self, sha1: bytes) -> bool:
        """Whether the SHA-1 digest ``sha1`` (20 bytes) is in the list."""
        key, width, data = sha1[: self.width], self.width, self._map
        lo, hi = 0, self.count
        while lo < hi:
            mid = (lo + hi) // 2
            at = HEADER.size + mid * width
            record = data[at : at + width]
            if record < key:
                lo = mid + 1
            elif record > key:
                hi = mid
            else:
                return True
        return False

    def close(self) -> None:
        self._map.close()

    def __enter__(self) -> BreachFile:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def _check_header(head: bytes, size: int, path: Path) -> tuple[int, int]:
    if len(head) < HEADER.size or not head.startswith(MAGIC):
        raise BreachFileDamaged(f"{path} does not start as a breach file")
    _, version, width, reserved, count = HEADER.unpack(head)
    if version != VERSION:
        raise BreachFileDamaged(f"{path} is of version {version}; this pk reads version {VERSION}")
    if not MIN_WIDTH <= width <= MAX_WIDTH or reserved != bytes(6):
        raise BreachFileDamaged(f"{path} has a malformed header")
    if size != HEADER.size + count * width:
        raise BreachFileDamaged(
            f"{path} holds {size} bytes, not the {HEADER.size + count * width} its header says"
        )
    return width, count
