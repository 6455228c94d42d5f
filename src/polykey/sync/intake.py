"""A peer's objects taken in as they arrive: each one's id computed here from its content, its
type and size checked, trees and commits parsed, and every commit's signature verified.

The first checks of sync/checks.py ``validate()``, which completes them once everything is
here (whether a signer may write, what each object names, depth, tag files). They overlap the
transfer: sync/client.py hands each page to ``Intake.extend_later`` and asks for the next page
meanwhile, and the Ed25519 verifications, which hold no lock of the interpreter, run on
several cores at once. Nothing is skipped: every commit's signature is verified.

Memory: in a paged transfer (``Intake(spool=True)``: a clone or a pull) a blob larger than
SPOOL_FROM is not kept in memory but sealed into a spool, an
unnamed temporary file (gone with the process, whatever way it ends) under a random key that
only this process holds, so nothing travels to disk in plaintext; it is read back, one object
at a time, as it lands. What a clone holds is then its commits, trees and small blobs, and a
few of its largest objects, not the history.
"""

from __future__ import annotations

import functools
import os
import queue
import tempfile
import threading
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import Future
from typing import IO, Any, cast

from dulwich.objects import Blob, Commit, ObjectID, ShaFile, Tree, parse_time_entry, parse_tree

from polykey.crypto import sshsig
from polykey.crypto.aead import SealBroken, Sealer
from polykey.errors import PolykeyError
from polykey.vaults.objects import object_id
from polykey.vaults.paths import InvalidSecretPath, check_component, fold
from polykey.vaults.tags import TAGS_FILE
from polykey.vaults.tree import DIR_MARKER
from polykey.vaults.vault import GIT_NAMESPACE

TYPES = {1: b"commit", 2: b"tree", 3: b"blob"}
MAX_OBJECT_BYTES = 256 * 1024 * 1024
OID_BYTES = 20  # a raw object id (SHA-1) in a tree entry
VERIFY_BATCH = 64  # commits verified in one job of the pool
VERIFY_THREADS = max(1, min(4, os.cpu_count() or 1))
SPOOL_FROM = 1024 * 1024  # a received blob larger than this waits in the sealed spool


class UpdateRefused(PolykeyError):
    """The update from the other node was refused; nothing changed here."""

    exit_code = 53


def parse_object(raw: bytes, sha: bytes) -> ShaFile:
    return ShaFile.from_raw_string(raw[0], raw[1:], sha=ObjectID(sha))


class ReceivedTree:
    """A received tree as its entries (name, mode, id), in its own order, as dulwich's parser
    reads them (no Tree object is built); ``tags``: (mode, id) of its `.polykey-tags`.

    What the tree alone decides is found here, as it arrives (on the intake's thread, while
    the next page travels): ``items``, the ids it names; ``dirs``, those named as folders;
    ``names_ok``, whether every entry has an allowed mode and name and no two names are equal
    once folded (sync/checks.py checks a tree without it entry by entry, for its problem)."""

    __slots__ = ("dirs", "entries", "items", "names_ok", "tags")

    def __init__(self, raw: bytes) -> None:
        self.entries: list[tuple[bytes, int, bytes]] = list(parse_tree(raw, sha_len=OID_BYTES))
        self.tags: tuple[int, bytes] | None = None
        if _TAGS_ENTRY in raw:  # rarely: then look for it among the names
            for name, mode, item in self.entries:
                if name == TAGS_FILE:
                    self.tags = (mode, item)
        self.items: tuple[bytes, ...] = ()
        self.dirs: list[bytes] = []
        self.names_ok = True
        if self.entries:
            names, modes, self.items = zip(*self.entries, strict=True)
            if _MODES.issuperset(modes):
                keys = set(map(_folded_name, names))
                self.names_ok = None not in keys and len(keys) == len(names)
            else:
                self.names_ok = False
            if DIR_MODE in modes:
                self.dirs = [i for m, i in zip(modes, self.items, strict=True) if m == DIR_MODE]

    def __len__(self) -> int:
        return len(self.entries)


FILE_MODE, DIR_MODE = 0o100644, 0o040000  # the only modes a vault's tree holds
RESERVED = {TAGS_FILE, DIR_MARKER}  # names checked further (sync/checks.py)


@functools.lru_cache(maxsize=65536)
def folded(name: bytes, mode: int) -> str | None:
    """The name of a tree entry as two names collide (NFC, case-folded); None for an entry
    refused: a forbidden mode or name."""
    if mode not in (FILE_MODE, DIR_MODE):
        return None
    if name not in RESERVED:
        try:
            check_component(name.decode("utf-8"))
        except (UnicodeDecodeError, InvalidSecretPath):
            return None
    return fold(name.decode("utf-8"))


_MODES = frozenset((FILE_MODE, DIR_MODE))


@functools.lru_cache(maxsize=65536)
def _folded_name(name: bytes) -> str | None:
    """``folded`` of a name under an allowed mode (one argument: a quicker cache)."""
    return folded(name, FILE_MODE)


_TAGS_ENTRY = b" " + TAGS_FILE + b"\x00"  # how a .polykey-tags entry starts in a raw tree


class ReceivedCommit:
    """A received commit as the checks need it: its tree, parents, signature and the bytes the
    signature covers (the commit without its ``gpgsig`` header).

    A commit as nodes make them (``tree``, ``parent``s, ``author``, ``committer``,
    ``encoding UTF-8`` or not, then ``gpgsig`` last) is read here by slicing the raw bytes, at
    a fraction of building a dulwich Commit; anything else (other headers, another order, no
    signature) is read by dulwich, as before. A test holds both readings equal."""

    __slots__ = ("gpgsig", "id", "parents", "payload", "tree")

    def __init__(
        self, sha: bytes, tree: bytes, parents: list[bytes], gpgsig: bytes | None, payload: bytes
    ) -> None:
        self.id, self.tree, self.parents, self.gpgsig, self.payload = (
            sha,
            tree,
            parents,
            gpgsig,
            payload,
        )

    def raw_without_sig(self) -> bytes:
        return self.payload

    @classmethod
    def read(cls, raw: bytes, sha: bytes) -> ReceivedCommit:
        """``raw``: the commit's content (no type byte). Raises what dulwich raises on a
        malformed one."""
        quick = _quick_commit(raw, sha)
        if quick is not None:
            return quick
        commit = cast(Commit, ShaFile.from_raw_string(Commit.type_num, raw, sha=ObjectID(sha)))
        gpgsig = commit.gpgsig
        payload = commit.raw_without_sig() if gpgsig is not None else raw
        return cls(sha, commit.tree, list(commit.parents), gpgsig, payload)


_SIG_HEADER = b"\ngpgsig "
_ENCODING = b"encoding UTF-8"  # the one header a node writes between committer and gpgsig


def _quick_commit(raw: bytes, sha: bytes) -> ReceivedCommit | None:
    """The commit read by slicing, or None when it is not of the usual shape."""
    end = raw.find(b"\n\n")  # the end of the headers
    at = raw.find(_SIG_HEADER, 0, end)
    if end < 0 or at < 0:
        return None
    stop = raw.find(b"\n", at + 1)  # the signature runs on lines that start with a space
    while 0 <= stop < end and raw[stop + 1] == 0x20:
        stop = raw.find(b"\n", stop + 1)
    if stop != end:  # not the last header (or a header line without a value follows)
        return None
    lines = raw[:at].split(b"\n")
    if lines[-1] == _ENCODING:  # as nodes write their commits
        lines.pop()
    if len(lines) < 3 or not lines[0].startswith(b"tree ") or len(lines[0]) != 45:
        return None
    parents = lines[1:-2]
    if not all(len(p) == 47 and p.startswith(b"parent ") for p in parents):
        return None
    if not lines[-2].startswith(b"author ") or not lines[-1].startswith(b"committer "):
        return None
    parse_time_entry(lines[-2][7:])  # refused as dulwich refuses it (ObjectFormatException)
    parse_time_entry(lines[-1][10:])
    sig_lines = raw[at + len(_SIG_HEADER) : end].split(b"\n ")
    if b"\n" in b"".join(sig_lines):  # a continuation line that does not start with a space
        return None
    return ReceivedCommit(
        sha,
        lines[0][5:],
        [p[7:] for p in parents],
        b"\n".join(sig_lines),
        raw[: at + 1] + raw[end + 1 :],
    )


Parsed = ReceivedCommit | ReceivedTree
Signed = list[tuple[bytes, bytes | None]]  # (commit id, its valid signer or None)


class _Spool:
    """Received objects sealed (AES-256-GCM, a random key, the object's id as associated data)
    into an unnamed temporary file, read back by (offset, length)."""

    def __init__(self) -> None:
        self._file: IO[bytes] = tempfile.TemporaryFile(prefix="pk-intake-")  # noqa: SIM115
        self._sealer = Sealer(os.urandom(32))
        self._end = 0
        self._lock = threading.Lock()

    def put(self, sha: bytes, raw: bytes) -> tuple[int, int]:
        sealed = self._sealer.seal(raw, sha)
        with self._lock:
            at = self._end
            self._file.seek(at)
            self._file.write(sealed)
            self._end += len(sealed)
        return at, len(sealed)

    def get(self, sha: bytes, at: int, length: int) -> bytes:
        with self._lock:
            self._file.seek(at)
            sealed = self._file.read(length)
        try:
            return self._sealer.open(sealed, sha)
        except SealBroken:  # the temporary file was changed under this process
            raise UpdateRefused("a received object changed while it waited") from None

    def close(self) -> None:
        self._file.close()


class Received(Mapping[bytes, bytes]):
    """Received objects by hex id (``u8 type ‖ raw``): in memory, or waiting in a spool (read
    back when asked for). ``kind`` and ``size`` answer without reading anything."""

    def __init__(self, spool: _Spool | None = None, *, spooling: bool = False) -> None:
        self._held: dict[bytes, bytes] = {}
        self._spooled: dict[bytes, tuple[int, int]] = {}
        self._kinds: dict[bytes, int] = {}
        self._sizes: dict[bytes, int] = {}
        self._spool = spool
        self._spooling = spooling  # large blobs go to a spool (else: all in memory)

    def add(self, sha: bytes, raw: bytes) -> None:
        if self._spooling and len(raw) > SPOOL_FROM:
            if self._spool is None:
                self._spool = _Spool()
            self._spooled[sha] = self._spool.put(sha, raw)
            self._held.pop(sha, None)
        else:
            self._held[sha] = raw
        self._kinds[sha] = raw[0]
        self._sizes[sha] = len(raw)

    def kind(self, sha: bytes) -> int | None:
        return self._kinds.get(sha)

    def size(self, sha: bytes) -> int:
        return self._sizes[sha]

    def only(self, keep: set[bytes]) -> Received:
        """These objects but those not in ``keep`` (sharing the spool)."""
        out = Received(self._spool)
        out._held = {k: v for k, v in self._held.items() if k in keep}
        out._spooled = {k: v for k, v in self._spooled.items() if k in keep}
        out._kinds = {k: v for k, v in self._kinds.items() if k in keep}
        out._sizes = {k: v for k, v in self._sizes.items() if k in keep}
        return out

    def __getitem__(self, sha: bytes) -> bytes:
        found = self._held.get(sha)
        if found is not None:
            return found
        at, length = self._spooled[sha]
        assert self._spool is not None
        return self._spool.get(sha, at, length)

    def __contains__(self, sha: object) -> bool:
        return sha in self._kinds

    def __iter__(self) -> Iterator[bytes]:
        return iter(self._kinds)

    def __len__(self) -> int:
        return len(self._kinds)


class Workers:
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


def _signers(commits: list[tuple[bytes, ReceivedCommit]]) -> Signed:
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

    def __init__(self, *, spool: bool = False) -> None:
        # hex id -> u8 type ‖ raw object; with ``spool``, large blobs wait in a sealed spool (a
        # transfer in pages, whose objects are not all in memory already)
        self.objects = Received(spooling=spool)
        self.parsed: dict[bytes, Parsed] = {}  # commits and trees
        self.signed: dict[bytes, bytes | None] = {}  # commit id -> its valid signer (or None)
        self.problem: UpdateRefused | None = None
        self._asked: set[bytes] = set()  # commits whose signature is being verified
        self._batch: list[tuple[bytes, ReceivedCommit]] = []
        self._verifying: list[Future[Signed]] = []
        self._pool: Workers | None = None
        self._reader: Workers | None = None  # extend_later's, one thread: in order
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
            self._reader = Workers(1, "pk-intake")
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
        self.objects.add(sha, raw)
        if raw[0] == Blob.type_num:
            return
        obj: Parsed
        try:
            if raw[0] == Tree.type_num:
                obj = ReceivedTree(raw[1:])
            else:
                obj = ReceivedCommit.read(raw[1:], sha)
        except Exception:
            raise UpdateRefused(f"object {sha.decode()} is malformed") from None
        self.parsed[sha] = obj
        if isinstance(obj, ReceivedCommit) and obj.gpgsig is not None and sha not in self._asked:
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
            self._pool = Workers(VERIFY_THREADS, "pk-verify")
        self._verifying.append(self._pool.submit(lambda: _signers(batch)))
