"""Stock git against a node: `git clone` and `git push ssh://HOST:PORT/VAULT`, served by dulwich.

Clone and fetch: dulwich's upload-pack over the vault as a dulwich repository (vaults/repo.py:
its sealed objects, each read as the type its place says), for a key (NodeId) holding `clone`
or `pull`. The pack is written here, not by dulwich's pack writer: a clone takes the node's
kept plan of the head (the one the peer protocol's clones use), objects are read a batch per
query, compressed at zlib level 1 (secrets barely compress), and sent in side-band packets of
up to 64 KiB rather than one per piece of each object. No partial clone (``filter``) is offered.

Push: dulwich's receive-pack for a key holding `push`, under
exactly the rules of `pk vaults push` (``PeerService.receive``): only ``refs/heads/main``, no
deletes or tags, fast-forward only, every new commit signed by a node allowed to write (git's
SSH signature, namespace "git": what `gpg.format=ssh` makes). The pack is read into memory
(sync/packin.py), never onto disk; nothing lands until all of it checks, then the objects and
the ref land in one transaction. A key without the permission gets the same "not found" as for
a vault that does not exist.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping
from typing import TYPE_CHECKING, Any

from dulwich.object_format import DEFAULT_OBJECT_FORMAT
from dulwich.objects import Commit, ObjectID
from dulwich.protocol import ReceivableProtocol
from dulwich.refs import Ref
from dulwich.repo import BaseRepo
from dulwich.server import Backend, ReceivePackHandler

from polykey.errors import PolykeyError
from polykey.ids import NodeId
from polykey.sync.checks import UpdateRefused
from polykey.sync.packin import read_pack
from polykey.trust.acl import Acl
from polykey.vaults.objects import VaultObjects
from polykey.vaults.registry import Vaults
from polykey.vaults.store import SealedObjectStore, reading

if TYPE_CHECKING:
    from dulwich.pack import UnpackedObject

READ_BATCH = 256  # records read in one query while a pack is written
READ_UP_TO = 64 * 1024  # a record larger than this is read on its own, when it is written

MAIN = b"refs/heads/main"
ZERO_ID = b"0" * 40
READ = frozenset({"clone", "pull"})
WRITE = frozenset({"push"})
# (peer, vault id, new head, objects, expected head) → result; raises PolykeyError when refused
Receive = Callable[[NodeId, str, bytes, list[bytes], bytes], dict[str, Any]]


class VaultBackend(Backend):
    """Opens a vault by name or id for a peer holding one of ``perms`` on it."""

    def __init__(
        self, vaults: Vaults, acl: Acl, peer: NodeId, perms: frozenset[str] = READ
    ) -> None:
        self.vaults = vaults
        self.acl = acl
        self.peer = peer
        self.perms = perms
        self.vault_id = ""
        self.store: SealedObjectStore | None = None

    def open_repository(self, path: str) -> BaseRepo:  # type: ignore[override]
        from dulwich.errors import NotGitRepository

        wanted = path.strip().strip("'\"").strip("/").removesuffix(".git")
        for info in self.vaults.all():
            grants = self.acl.permissions(info.id, self.peer)
            if wanted in (info.id, info.name) and self.perms & set(grants):
                vault = self.vaults.open(info.name)
                if vault.head() is None and self.perms == READ:
                    break
                # dulwich's git server only reads: it may share the cache's parsed objects
                repo = vault.repo(symbolic_head=self.perms == READ, shared=True)
                self.vault_id, self.store = info.id, repo.object_store
                return repo
        raise NotGitRepository("repository not found")  # the same whether it exists or not


def serve_upload_pack(
    vaults: Vaults, acl: Acl, peer: NodeId, path: str, recv: Any, write: Any
) -> None:
    """Run git's upload-pack for one peer on a byte stream (blocking; run it in a thread)."""
    from dulwich.errors import GitProtocolError, NotGitRepository
    from dulwich.protocol import (
        CAPABILITY_FILTER,
        CAPABILITY_NO_DONE,
        CAPABILITY_SIDE_BAND_64K,
        SIDE_BAND_CHANNEL_FATAL,
    )
    from dulwich.server import UploadPackHandler

    class _UploadPack(UploadPackHandler):
        sending = False  # the pack is being sent: errors go on the side band from now on

        def capabilities(self) -> list[bytes]:
            return [c for c in super().capabilities() if c != CAPABILITY_FILTER]

        def _start_pack_send_phase(self) -> None:
            self.sending = True
            super()._start_pack_send_phase()

        def handle(self) -> None:
            """dulwich's ``UploadPackHandler.handle`` (without filters), the pack ours."""
            from dulwich.server import _ProtocolGraphWalker

            self._processing_have_lines = True
            repo = self.repo
            walker = _ProtocolGraphWalker(
                self, repo.object_store, repo.get_peeled, repo.refs.get_symrefs
            )
            wants: list[ObjectID] = []

            def wanted(refs: Mapping[Ref, ObjectID], depth: int | None = None) -> list[ObjectID]:
                wants.extend(walker.determine_wants(refs, depth))
                return wants

            missing = repo.find_missing_objects(
                wanted, walker, self.progress, get_tagged=self.get_tagged
            )
            if not wants or missing is None:
                return
            object_ids = list(missing)
            if not walker.handle_done(
                not self.has_capability(CAPABILITY_NO_DONE), self._done_received
            ):
                return
            self._start_pack_send_phase()
            self.progress(f"counting objects: {len(object_ids)}, done.\n".encode("ascii"))
            assert isinstance(repo.object_store, SealedObjectStore)
            write_pack(self.write_pack_data, repo.object_store.objects, object_ids)
            self.proto.write_pkt_line(None)

    proto = ReceivableProtocol(recv, write)
    try:
        handler = _UploadPack(VaultBackend(vaults, acl, peer), [path], proto)
    except NotGitRepository:
        proto.write_pkt_line(b"ERR repository not found\n")
        return
    try:
        handler.handle()
    except GitProtocolError:  # the client hung up or spoke nonsense
        return
    except Exception as exc:  # a vault whose history does not fit: say so to git, not a hang-up
        why = (
            exc.message
            if isinstance(exc, PolykeyError)
            else f"the vault cannot be served ({type(exc).__name__}); "
            "`pk node check` on the serving node lists what is wrong with it"
        )
        with contextlib.suppress(Exception):
            if not handler.sending:
                proto.write_pkt_line(b"ERR " + _line(why) + b"\n")
            elif handler.has_capability(CAPABILITY_SIDE_BAND_64K):
                proto.write_sideband(SIDE_BAND_CHANNEL_FATAL, _line(why) + b"\n")


PACK_LEVEL = 1  # zlib level of a pack sent: secrets are mostly random, level 6 gains little
PACKET_BYTES = 65515  # data in one side-band-64k packet (65520 less its header and channel)


def write_pack(
    write: Callable[[bytes], object], objects: VaultObjects, ids: list[tuple[ObjectID, Any]]
) -> None:
    """Write a pack of ``ids`` ((id, (type number, path) or None), as an upload-pack's list of
    missing objects holds them) through ``write``, in pieces of at most PACKET_BYTES. Each
    object is read as the type its hint says (a commit without one), in batches of READ_BATCH
    records per query; one larger than READ_UP_TO on its own."""
    from dulwich.pack import write_pack_data

    pending = bytearray()

    def buffered(data: bytes | bytearray | memoryview) -> None:
        pending.extend(data)
        while len(pending) >= PACKET_BYTES:
            write(bytes(pending[:PACKET_BYTES]))
            del pending[:PACKET_BYTES]

    write_pack_data(
        buffered,
        _unpacked(objects, ids),
        object_format=DEFAULT_OBJECT_FORMAT,
        num_records=len(ids),
        compression_level=PACK_LEVEL,
    )
    if pending:
        write(bytes(pending))


def _unpacked(objects: VaultObjects, ids: list[tuple[ObjectID, Any]]) -> Iterator[UnpackedObject]:
    from dulwich.pack import UnpackedObject

    for start in range(0, len(ids), READ_BATCH):
        batch: list[tuple[bytes, int]] = [
            (sha, hint[0] if hint is not None and hint[0] is not None else Commit.type_num)
            for sha, hint in ids[start : start + READ_BATCH]
        ]
        with reading(objects):
            records = objects.wire_records(batch, READ_UP_TO)
        for (sha, type_num), (record, _) in zip(batch, records, strict=True):
            raw = record if record is not None else objects.wire(sha, type_num)
            body: Any = memoryview(raw)[1:]  # zlib and len() take it as they take bytes
            yield UnpackedObject(type_num, sha=sha, decomp_chunks=[body])


def serve_receive_pack(
    vaults: Vaults, acl: Acl, peer: NodeId, path: str, recv: Any, write: Any, receive: Receive
) -> list[str]:
    """Run git's receive-pack for one peer on a byte stream (blocking; run it in a thread).

    ``receive`` is ``PeerService.receive`` (the caller runs it where node writes run). Returns
    one line per ref update, for the log: the ref and "ok" or why it was refused."""
    from dulwich.errors import GitProtocolError, NotGitRepository

    proto = ReceivableProtocol(recv, write)
    try:
        backend = VaultBackend(vaults, acl, peer, WRITE)
        handler = _ReceivePack(backend, [path], proto, peer, receive)
    except NotGitRepository:
        proto.write_pkt_line(b"ERR repository not found\n")
        return []
    with contextlib.suppress(GitProtocolError):  # the client hung up or spoke nonsense
        handler.handle()
    return handler.outcome


class _ReceivePack(ReceivePackHandler):
    """dulwich's receive-pack with its pack reading and ref writing replaced by ours."""

    def __init__(
        self,
        backend: VaultBackend,
        args: list[str],
        proto: ReceivableProtocol,
        peer: NodeId,
        receive: Receive,
    ) -> None:
        super().__init__(backend, args, proto)
        assert backend.store is not None
        self.vault_id, self.store, self.stream = backend.vault_id, backend.store, proto
        self.peer = peer
        self.receive = receive
        self.outcome: list[str] = []

    def _apply_pack(
        self, refs: list[tuple[ObjectID, ObjectID, Ref]]
    ) -> Iterator[tuple[bytes, bytes]]:
        status = self._statuses(refs)
        self.outcome = [f"{r.decode(errors='replace')[:80]}: {m.decode()}" for r, m in status[1:]]
        yield from status

    def _statuses(self, refs: list[tuple[ObjectID, ObjectID, Ref]]) -> list[tuple[bytes, bytes]]:
        objects: list[bytes] = []
        if any(new != ZERO_ID for _, new, _ in refs):  # git sends a pack unless all are deletes
            store = self.store

            def base(sha: bytes) -> tuple[int, bytes] | None:
                return store.get_raw(sha) if sha in store else None

            try:
                objects = read_pack(self.stream.recv, base)
            except PolykeyError as exc:
                return [(b"unpack", _reason(exc))] + [(r, b"unpacker error") for *_, r in refs]
        refused = {ref: why for _, new, ref in refs if (why := _ref_rule(ref, new))}
        if refused or len(refs) != 1:
            other = b"not applied: refs/heads/main is updated alone, once per push"
            return [(b"unpack", b"ok")] + [(r, refused.get(r, other)) for *_, r in refs]
        ((old, new, ref),) = refs
        try:
            self.receive(self.peer, self.vault_id, new, objects, old)
        except PolykeyError as exc:
            return [(b"unpack", b"ok"), (ref, _reason(exc))]
        except Exception as exc:  # a fault here must still answer git, and change nothing
            return [(b"unpack", b"ok"), (ref, _line(f"internal error ({type(exc).__name__})"))]
        return [(b"unpack", b"ok"), (ref, b"ok")]


def _ref_rule(ref: bytes, new: bytes) -> bytes:
    """Why this ref update is refused whatever its objects are (b"" when it is not)."""
    if ref.startswith(b"refs/tags/"):
        return b"tags are not accepted: a vault has only refs/heads/main"
    if ref != MAIN:
        return b"only refs/heads/main can be pushed to a vault"
    if new == ZERO_ID:
        return b"refs/heads/main cannot be deleted"
    return b""


def _reason(exc: PolykeyError) -> bytes:
    """Why, for git's status report: what was refused (the summary speaks of pulls)."""
    return _line(exc.detail if isinstance(exc, UpdateRefused) and exc.detail else exc.message)


def _line(text: str) -> bytes:
    """One printable line."""
    text = "".join(c if c.isprintable() else " " for c in text)
    return text[:200].encode("utf-8", "replace")
