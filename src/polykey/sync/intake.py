"""A peer's objects taken in as they arrive: each one's id computed here from its content, its
type and size checked, trees and commits parsed, and every commit's signature verified.

The first checks of sync/checks.py ``validate()``, which completes them once everything is
here (whether a signer may write, what each object names, depth, tag files). They overlap the
transfer: sync/client.py hands each page to ``Intake.extend_later`` and asks for the next page
meanwhile, and the Ed25519 verifications, which hold no lock of the interpreter, run on
several cores at once. Nothing is skipped: every commit's signature is verified.
"""

from __future__ import annotations

import os
import queue
import threading
from collections.abc import Callable
from concurrent.futures import Future
from typing import Any, cast

from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree, parse_tree

from polykey.crypto import sshsig
from polykey.errors import PolykeyError
from polykey.vaults.objects import object_id
from polykey.vaults.tags import TAGS_FILE
from polykey.vaults.vault import GIT_NAMESPACE

TYPES = {1: b"commit", 2: b"tree", 3: b"blob"}
MAX_OBJECT_BYTES = 256 * 1024 * 1024
OID_BYTES = 20  # a raw object id (SHA-1) in a tree entry
VERIFY_BATCH = 64  # commits verified in one job of the pool
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))


class UpdateRefused(PolykeyError):
    """The update from the other node was refused; nothing changed here."""

    exit_code = 53


def parse_object(raw: bytes, sha: bytes) -> ShaFile:
    return ShaFile.from_raw_string(raw[0], raw[1:], sha=ObjectID(sha))


class ReceivedTree:
    """A received tree as its entries (name, mode, id), in its own order, as dulwich's parser
    reads them (no Tree object is built); ``tags``: (mode, id) of its `.polykey-tags`."""

    __slots__ = ("entries", "tags")

    def __init__(self, raw: bytes) -> None:
        self.entries: list[tuple[bytes, int, bytes]] = list(parse_tree(raw, sha_len=OID_BYTES))
        self.tags: tuple[int, bytes] | None = None
        if _TAGS_ENTRY in raw:  # rarely: then look for it among the names
            for name, mode, item in self.entries:
                if name == TAGS_FILE:
                    self.tags = (mode, item)

    def __len__(self) -> int:
        return len(self.entries)


_TAGS_ENTRY = b" " + TAGS_FILE + b"\x00"  # how a .polykey-tags entry starts in a raw tree
Parsed = Commit | ReceivedTree
Signed = list[tuple[bytes, bytes | None]]  # (commit id, its valid signer or None)


class _Workers:
    """A few daemon threads running jobs in the order given (one thread: strictly in order).
    Daemon threads, not concurrent.futures' pool: that one joins its threads at exit, which
    turns a process ending on a refused update into a traceback from the network loop."""

    def __init__(self, count: int, name: str) -> None:
        self._jobs: queue.SimpleQueue[tuple[Future[Any], Callable[[], Any]] | None]
        self._jobs = queue.SimpleQueue()
        self._count = count
        for i in range(count):
            threading.Thread(target=self._run, name=f"{name}-{i}", daemon=True).start()

    def submit(self, job: Callable[[], Any]) -> Future[Any]:
        future: Future[Any] = Future()
        self._jobs.put((future, job))
        return future

    def shutdown(self) -> None:
        """Drop the jobs not started; the threads end after the one under way."""
        while True:
            try:
                item = self._jobs.get_nowait()
            except queue.Empty:
                break
            if item is not None:
                item[0].cancel()
        for _ in range(self._count):
            self._jobs.put(None)

    def _run(self) -> None:
        while (item := self._jobs.get()) is not None:
            future, job = item
            if not future.set_running_or_notify_cancel():
                continue
            try:
                future.set_result(job())
            except BaseException as exc:  # handed to whoever waits for it
                future.set_exception(exc)


def _signers(commits: list[tuple[bytes, Commit]]) -> Signed:
    """Verify each commit's signature; (id, the key whose valid signature it is, or None)."""
    out: Signed = []
    for sha, commit in commits:
        assert commit.gpgsig is not None
        try:
            signer = sshsig.signer_of(commit.gpgsig, commit.raw_without_sig(), GIT_NAMESPACE)
        except sshsig.MalformedSignature:
            signer = None
        out.append((sha, signer))
    return out


class Intake:
    """A peer's objects, checked one by one as they come. A problem is kept, not raised:
    ``validate`` raises it, after the checks of the transfer itself.

    ``extend`` takes objects at once on the calling thread; ``extend_later`` on the intake's
    own thread, in the order given (the caller, the network loop, goes on receiving). Either
    way signatures are verified by a pool of threads; ``finish`` waits for all of it (and is
    called by ``validate``), after which ``signed`` holds every signed commit's signer."""

    def __init__(self) -> None:
        self.objects: dict[bytes, bytes] = {}  # hex id -> u8 type ‖ raw object
        self.parsed: dict[bytes, Parsed] = {}  # commits and trees
        self.signed: dict[bytes, bytes | None] = {}  # commit id -> its valid signer (or None)
        self.problem: UpdateRefused | None = None
        self._asked: set[bytes] = set()  # commits whose signature is being verified
        self._batch: list[tuple[bytes, Commit]] = []
        self._verifying: list[Future[Signed]] = []
        self._pool: _Workers | None = None
        self._reader: _Workers | None = None  # extend_later's, one thread: in order
        self._taking: list[Future[None]] = []

    def add(self, raw: Any) -> None:
        if self.problem is None:
            try:
                self._add(raw)
            except UpdateRefused as exc:
                self.problem = exc

    def extend(self, received: list[Any]) -> None:
        for raw in received:
            self.add(raw)
        self._flush()

    def extend_later(self, received: list[Any]) -> None:
        """``extend`` on the intake's own thread, after what was handed to it before."""
        if self._reader is None:
            self._reader = _Workers(1, "pk-intake")
        self._taking.append(self._reader.submit(lambda: self.extend(received)))

    def finish(self) -> None:
        """Wait until every object handed over is taken in and every signature verified."""
        try:
            for taking in self._taking:
                taking.result()
            if self._pool is None:  # a few commits (a pull): verified here, no thread started
                batch, self._batch = self._batch, []
                self.signed.update(_signers(batch))
            self._flush()
            for verifying in self._verifying:
                self.signed.update(verifying.result())
        finally:
            self.close()
        self._taking, self._verifying = [], []

    def close(self) -> None:
        """Stop the intake's threads (what is under way is dropped); ``finish`` does it too."""
        for pool in (self._reader, self._pool):
            if pool is not None:
                pool.shutdown()
        self._reader = self._pool = None

    def _add(self, raw: Any) -> None:
        if not isinstance(raw, bytes) or not raw or raw[0] not in TYPES:
            raise UpdateRefused("an object of an unknown or forbidden type")
        if len(raw) > MAX_OBJECT_BYTES:
            raise UpdateRefused("an object is too large")
        sha = object_id(raw[0], memoryview(raw)[1:])
        self.objects[sha] = raw
        if raw[0] == Blob.type_num:
            return
        obj: Parsed
        try:
            if raw[0] == Tree.type_num:
                obj = ReceivedTree(raw[1:])
            else:
                obj = cast(Commit, parse_object(raw, sha))
        except Exception:
            raise UpdateRefused(f"object {sha.decode()} is malformed") from None
        self.parsed[sha] = obj
        if isinstance(obj, Commit) and obj.gpgsig is not None and sha not in self._asked:
            self._asked.add(sha)
            self._batch.append((sha, obj))
            if len(self._batch) >= VERIFY_BATCH:
                self._flush()

    def _flush(self) -> None:
        """Hand the commits gathered so far to the pool of verifiers."""
        if not self._batch:
            return
        batch, self._batch = self._batch, []
        if self._pool is None:
            self._pool = _Workers(VERIFY_THREADS, "pk-verify")
        self._verifying.append(self._pool.submit(lambda: _signers(batch)))
