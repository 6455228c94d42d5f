"""Objects taken in page by page on the intake's threads are checked exactly as a list is:
every commit's signature is verified (on a pool of threads past a batch), and a problem in any
page is raised by validate() once the transfer is done."""

from __future__ import annotations

import pytest
from dulwich.objects import Blob, Commit, Tree

from polykey.sync import intake as intake_module
from polykey.sync.checks import Intake, UpdateRefused, validate
from tests.sync.test_validate import OWNER, STRANGER, commit, raw, tree_with

COMMITS = 2 * intake_module.VERIFY_BATCH + 5  # more than one job of the verifiers' pool


def history(count: int, bad_at: int | None = None) -> tuple[list[bytes], Commit]:
    """``count`` commits in a line, each over its own tree and blob; the one at ``bad_at``
    signed by a stranger. The objects in the order a clone's pages bring them."""
    objects: list[bytes] = []
    parents: list[bytes] = []
    head: Commit | None = None
    for i in range(count):
        tree, blob = tree_with(b"s%d" % i, data=b"v%d" % i)
        head = commit(tree, STRANGER if i == bad_at else OWNER, parents)
        parents = [head.id]
        objects += [raw(head), raw(tree), raw(blob)]
    assert head is not None
    return objects, head


def pages(objects: list[bytes], size: int) -> list[list[bytes]]:
    return [objects[i : i + size] for i in range(0, len(objects), size)]


def test_pages_taken_on_the_intake_threads_give_what_a_list_gives() -> None:
    objects, head = history(COMMITS)
    intake = Intake()
    for page in pages(objects, 50):
        intake.extend_later(page)
    landed = validate(intake, head.id, lambda _s: False, {OWNER.public})
    assert landed == validate(objects, head.id, lambda _s: False, {OWNER.public})
    assert len(intake.signed) == COMMITS
    assert set(intake.signed.values()) == {OWNER.public}


@pytest.mark.parametrize("bad_at", [0, intake_module.VERIFY_BATCH, COMMITS - 1])
def test_one_commit_by_a_stranger_among_many_is_refused(bad_at: int) -> None:
    objects, head = history(COMMITS, bad_at)
    intake = Intake()
    for page in pages(objects, 70):
        intake.extend_later(page)
    with pytest.raises(UpdateRefused, match="not signed by a node allowed to write"):
        validate(intake, head.id, lambda _s: False, {OWNER.public})
    with pytest.raises(UpdateRefused, match="not signed by a node allowed to write"):
        validate(objects, head.id, lambda _s: False, {OWNER.public})


def test_a_signature_that_does_not_match_its_commit_is_refused() -> None:
    objects, _ = history(COMMITS)
    tampered = Commit.from_string(objects[-3][1:])  # the head
    tampered.message = b"Something else.\n"  # the signature of the old message stays
    objects[-3] = raw(tampered)
    intake = Intake()
    for page in pages(objects, 64):
        intake.extend_later(page)
    with pytest.raises(UpdateRefused, match="not signed by a node allowed to write"):
        validate(intake, tampered.id, lambda _s: False, {OWNER.public})


def test_a_bad_object_in_a_later_page_is_raised_after_the_transfer() -> None:
    objects, head = history(COMMITS)
    intake = Intake()
    intake.extend_later(objects[:30])
    intake.extend_later([b"\x07not an object"])  # kept, not raised on the intake's thread
    intake.extend_later(objects[30:])
    with pytest.raises(UpdateRefused, match="unknown or forbidden type"):
        validate(intake, head.id, lambda _s: False, {OWNER.public})


def test_a_closed_intake_stops_its_threads_and_can_be_closed_twice() -> None:
    objects, _ = history(COMMITS)
    intake = Intake()
    intake.extend_later(objects)
    intake.close()
    intake.close()


def test_a_few_commits_are_verified_without_a_pool() -> None:
    tree, blob = tree_with(b"password")
    c = commit(tree)
    intake = Intake()
    intake.extend([raw(blob), raw(tree), raw(c)])
    validate(intake, c.id, lambda _s: False, {OWNER.public})
    assert intake.signed == {c.id: OWNER.public}
    assert intake._pool is None


def test_an_unsigned_blob_and_tree_need_no_verification() -> None:
    blob = Blob.from_string(b"x")
    tree = Tree()
    tree.add(b"x", 0o100644, blob.id)
    intake = Intake()
    intake.extend([raw(blob), raw(tree)])
    intake.finish()
    assert intake.signed == {}


def test_a_large_blob_waits_sealed_in_the_spool_and_reads_back_whole(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import os

    monkeypatch.setattr(intake_module, "SPOOL_FROM", 1000)
    secret = os.urandom(5000)
    tree, blob = tree_with(b"big", data=secret)
    head = commit(tree, OWNER, [])
    intake = Intake(spool=True)
    intake.extend_later([raw(head), raw(tree), raw(blob)])
    landed = validate(intake, head.id, lambda _s: False, {OWNER.public})
    spool = landed._spool
    assert spool is not None  # the blob waits there, not in memory
    assert blob.id not in landed._held
    spool._file.seek(0)
    assert secret[:64] not in spool._file.read()  # sealed: never in plaintext on disk
    assert landed[blob.id] == raw(blob)
    assert landed == validate(
        [raw(head), raw(tree), raw(blob)], head.id, lambda _s: False, {OWNER.public}
    )
