"""The breach file (vaults/breaches.py, docs/spec/health.md): converting Have I Been Pwned's
SHA-1 list, sorted or not, and looking hashes up in it; the spec's vectors, and refusals."""

from __future__ import annotations

import hashlib
import io
import random
from pathlib import Path

import pytest

from polykey.vaults.breaches import (
    HEADER,
    BreachFile,
    BreachFileDamaged,
    BreachFileMissing,
    MalformedBreachList,
    convert,
)

# docs/spec/health.md, "Vectors"
VECTOR_LIST = (
    b"5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8:3861493\n"
    b"7C4A8D09CA3762AF61E59520943DC26494F8941B:37359195\n"
    b"F3BBBD66A63D4BF1747940578EC3D0103530E21D:17043\n"
)
VECTOR_FILE = bytes.fromhex(
    "504b425245414348" "01" "08" "000000000000" "0000000000000003"
    "5baa61e4c9b93f3f" "7c4a8d09ca3762af" "f3bbbd66a63d4bf1"
)  # fmt: skip


def sha1(word: bytes) -> bytes:
    return hashlib.sha1(word).digest()


def hibp_list(digests: list[bytes], rng: random.Random) -> bytes:
    return b"".join(d.hex().upper().encode() + b":%d\n" % rng.randint(1, 10**6) for d in digests)


def test_the_spec_vector_converts_to_its_bytes(tmp_path: Path) -> None:
    target = tmp_path / "b.pkb"
    done = convert(io.BytesIO(VECTOR_LIST), target)
    assert target.read_bytes() == VECTOR_FILE
    assert (done.lines, done.records, done.width, done.runs) == (3, 3, 8, 1)
    with BreachFile(target) as breaches:
        assert breaches.breached(sha1(b"password"))
        assert breaches.breached(sha1(b"123456"))
        assert breaches.breached(sha1(b"hunter2"))
        assert not breaches.breached(sha1(b"hunter3"))


def test_an_unsorted_list_gives_the_same_file_as_the_sorted_one(tmp_path: Path) -> None:
    rng = random.Random(7)
    digests = [rng.randbytes(20) for _ in range(3000)]
    text = hibp_list(digests, rng).splitlines(keepends=True)
    convert(io.BytesIO(b"".join(sorted(text))), tmp_path / "sorted.pkb")
    rng.shuffle(text)
    done = convert(  # many runs, merged in several passes
        io.BytesIO(b"".join(text)), tmp_path / "shuffled.pkb", run_records=100, fan_in=4
    )
    assert done.runs == 30
    assert (tmp_path / "sorted.pkb").read_bytes() == (tmp_path / "shuffled.pkb").read_bytes()
    with BreachFile(tmp_path / "shuffled.pkb") as breaches:
        assert breaches.count == 3000
        assert all(breaches.breached(d) for d in digests)
        assert not any(breaches.breached(rng.randbytes(20)) for _ in range(2000))


def test_a_sorted_list_in_many_chunks_stays_one_run(tmp_path: Path) -> None:
    rng = random.Random(8)
    text = b"".join(
        sorted(hibp_list([rng.randbytes(20) for _ in range(1000)], rng).splitlines(True))
    )
    done = convert(io.BytesIO(text), tmp_path / "b.pkb", run_records=64)
    assert done.runs == 1 and done.records == 1000


def test_duplicates_blank_lines_crlf_and_lower_case_are_taken(tmp_path: Path) -> None:
    digest = sha1(b"password").hex()
    text = f"{digest.upper()}:3\r\n\r\n{digest}:3\n\n{sha1(b'x').hex()}:1".encode()
    done = convert(io.BytesIO(text), tmp_path / "b.pkb", width=20)
    assert (done.lines, done.records) == (3, 2)
    with BreachFile(tmp_path / "b.pkb") as breaches:
        assert breaches.width == 20
        assert breaches.breached(sha1(b"password")) and breaches.breached(sha1(b"x"))


def test_an_empty_list_makes_a_file_that_finds_nothing(tmp_path: Path) -> None:
    convert(io.BytesIO(b""), tmp_path / "b.pkb")
    with BreachFile(tmp_path / "b.pkb") as breaches:
        assert breaches.count == 0
        assert not breaches.breached(sha1(b"password"))


@pytest.mark.parametrize(
    ("line", "why"),
    [
        (
            b"8846F7EAEE8FB117AD06BDD830B7586C:2\n",
            "line 2 is an NTLM hash; the SHA-1 list is needed",
        ),
        (b"5BAA61E4C9B93F3F0682250B6CF8331B7EE68FD8\n", "line 2 has no `:COUNT`"),
        (b"hunter2:12\n", "line 2 is not `HASH:COUNT`"),
        (b"5BAA61E4C9B93F3F0682250B6CF8331B7EE68FDZ:1\n", "line 2 is not `HASH:COUNT`"),
    ],
)
def test_a_malformed_line_is_refused_by_number_and_nothing_is_written(
    tmp_path: Path, line: bytes, why: str
) -> None:
    target = tmp_path / "b.pkb"
    with pytest.raises(MalformedBreachList) as caught:
        convert(io.BytesIO(VECTOR_LIST[:49] + line), target)
    assert caught.value.message.startswith(f"The breach list is malformed: {why}")
    assert "hunter2" not in caught.value.message  # never the line itself
    assert "HASH:COUNT" in caught.value.user_hint
    assert list(tmp_path.iterdir()) == []


def damaged(data: bytes, at: int, value: bytes) -> bytes:
    return data[:at] + value + data[at + len(value) :]


@pytest.mark.parametrize(
    ("data", "why"),
    [
        (b"", "does not start as a breach file"),
        (damaged(VECTOR_FILE, 0, b"X"), "does not start as a breach file"),
        (damaged(VECTOR_FILE, 8, b"\x02"), "is of version 2; this pk reads version 1"),
        (damaged(VECTOR_FILE, 9, b"\x05"), "has a malformed header"),
        (damaged(VECTOR_FILE, 9, b"\x15"), "has a malformed header"),
        (damaged(VECTOR_FILE, 12, b"\x01"), "has a malformed header"),
        (VECTOR_FILE[:-1], "holds 47 bytes, not the 48 its header says"),
        (VECTOR_FILE + b"\x00", "holds 49 bytes, not the 48 its header says"),
        (damaged(VECTOR_FILE, 16, (4).to_bytes(8, "big")), "holds 48 bytes, not the 56"),
    ],
)
def test_a_damaged_breach_file_is_refused(tmp_path: Path, data: bytes, why: str) -> None:
    path = tmp_path / "b.pkb"
    path.write_bytes(data)
    with pytest.raises(BreachFileDamaged) as caught:
        BreachFile(path)
    assert why in caught.value.message
    assert caught.value.exit_code == 3
    assert "import-breaches" in caught.value.user_hint


def test_a_missing_breach_file_is_refused_with_a_hint(tmp_path: Path) -> None:
    with pytest.raises(BreachFileMissing) as caught:
        BreachFile(tmp_path / "none.pkb")
    assert caught.value.message == f"No breach file: {tmp_path / 'none.pkb'}"
    assert "pk health import-breaches FILE" in caught.value.user_hint


def test_the_header_is_24_bytes() -> None:
    assert HEADER.size == 24
