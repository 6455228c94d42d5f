"""The quick reading of a received commit (sync/intake.py ``ReceivedCommit``) agrees with
dulwich's on every commit shape, and falls back to dulwich on any other."""

from __future__ import annotations

import pytest
from dulwich.errors import ObjectFormatException
from dulwich.objects import Commit, ObjectID

from polykey.sync.intake import ReceivedCommit, _quick_commit

SIG = (
    b"-----BEGIN SSH SIGNATURE-----\nU1NIU0lHAAAAAQAAADMAAAALc3NoLWVkMjU1MTkAAAAg\n"
    b"AAAAQMZ1xk9w==\n-----END SSH SIGNATURE-----"
)


def _commit(parents: int, *, sig: bytes | None = SIG, encoding: bytes | None = None) -> Commit:
    c = Commit()
    c.tree = b"4b825dc642cb6eb9a060e54bf8d69288fbee4904"
    c.parents = [ObjectID(b"%040x" % (i + 1)) for i in range(parents)]
    c.author = c.committer = b"node <n@polykey>"
    c.author_time = c.commit_time = 1_700_000_000
    c.author_timezone = c.commit_timezone = 0
    c.message = b"write team/s1\n\nmore text\n"
    if encoding is not None:
        c.encoding = encoding
    if sig is not None:
        c.gpgsig = sig
    return c


def _both(c: Commit) -> tuple[ReceivedCommit, Commit]:
    raw = c.as_raw_string()
    ours = ReceivedCommit.read(raw, c.id)
    theirs = Commit.from_raw_string(Commit.type_num, raw)
    assert isinstance(theirs, Commit)
    return ours, theirs


@pytest.mark.parametrize("parents", [0, 1, 2, 5])
@pytest.mark.parametrize("encoding", [None, b"UTF-8"], ids=["no encoding", "as nodes write"])
def test_the_usual_shape_is_read_quickly_and_as_dulwich_reads_it(
    parents: int, encoding: bytes | None
) -> None:
    c = _commit(parents, encoding=encoding)
    assert _quick_commit(c.as_raw_string(), c.id) is not None
    ours, theirs = _both(c)
    assert ours.tree == theirs.tree
    assert ours.parents == list(theirs.parents)
    assert ours.gpgsig == theirs.gpgsig
    assert ours.raw_without_sig() == theirs.raw_without_sig()
    assert ours.id == c.id


@pytest.mark.parametrize(
    "commit",
    [_commit(1, sig=None), _commit(1, encoding=b"latin-1")],
    ids=["unsigned", "another header"],
)
def test_other_shapes_are_read_by_dulwich(commit: Commit) -> None:
    raw = commit.as_raw_string()
    assert _quick_commit(raw, commit.id) is None
    ours, theirs = _both(commit)
    assert (ours.tree, ours.parents, ours.gpgsig) == (theirs.tree, theirs.parents, theirs.gpgsig)
    if theirs.gpgsig is not None:
        assert ours.raw_without_sig() == theirs.raw_without_sig()


def test_a_signature_that_is_not_the_last_header_goes_to_dulwich() -> None:
    raw = _commit(1).as_raw_string()
    head, _, message = raw.partition(b"\n\n")
    moved = head.replace(b"\ncommitter ", b"\nx-extra 1\ncommitter ", 1)
    moved = moved + b"\nx-late yes\n\n" + message
    assert _quick_commit(moved, b"0" * 40) is None


def test_a_continuation_line_without_its_space_goes_to_dulwich() -> None:
    raw = _commit(1).as_raw_string().replace(b"\n AAAAQMZ1", b"\nAAAAQMZ1", 1)
    assert _quick_commit(raw, b"0" * 40) is None


def test_a_malformed_time_is_refused_as_dulwich_refuses_it() -> None:
    raw = _commit(1).as_raw_string().replace(b"1700000000 +0000", b"notatime +0000")
    with pytest.raises((ObjectFormatException, ValueError)):
        ReceivedCommit.read(raw, b"0" * 40)
