"""`pk export git`: a plain git repository of a vault, its signed history, checked out.

This is the one export that writes every secret in plaintext to disk; the command asks for
--yes. The commits keep their SSH signatures: the repository's config points git at an allowed
signers file naming the vault's writers by NodeId (this node, the nodes granted `push`, and for a
clone the node it came from), so `git log --show-signature` calls a commit good only when one of
them signed it. The signers are never taken from the commits: that would make any key good.
A key the vault's node renewed away from (or revoked as stolen) signs only up to its time: its
line carries ``valid-before``, as `pk vaults signers` writes it (docs/spec/keys.md).
"""

from __future__ import annotations

import base64
import datetime
import struct
from collections.abc import Mapping
from pathlib import Path

from polykey.interop.errors import ExportFailed

SIGNERS_FILE = "polykey-allowed-signers"


def _openssh(public: bytes) -> str:
    kind = b"ssh-ed25519"
    blob = struct.pack(">I", len(kind)) + kind + struct.pack(">I", len(public)) + public
    return "ssh-ed25519 " + base64.b64encode(blob).decode("ascii")


def valid_before(until: object) -> str:
    """The allowed-signers option that ends a key after ``until`` (unix seconds), if any."""
    if not isinstance(until, int) or isinstance(until, bool):
        return ""
    when = datetime.datetime.fromtimestamp(until, datetime.UTC).strftime("%Y%m%d%H%M%S")
    return f',valid-before="{when}Z"'


def write_repository(
    dest: Path,
    head: str | None,
    objects: list[bytes],
    *,
    writers: list[str],
    until: Mapping[str, int] | None = None,
) -> list[str]:
    """Write the objects into a new repository at ``dest``, with ``writers`` (NodeIds) as its
    allowed signers (``until``: the renewed ones, the last second they sign); returns the
    NodeIds of the keys that signed commits but are no writer."""
    from dulwich.index import build_index_from_tree
    from dulwich.objects import Commit, ObjectID, ShaFile
    from dulwich.refs import Ref
    from dulwich.repo import Repo

    from polykey.crypto import sshsig
    from polykey.errors import InvalidNodeId
    from polykey.ids import decode_node_id, encode_node_id, node_id_from_bytes

    allowed: dict[str, str] = {}
    for writer in writers:
        try:
            allowed[writer] = _openssh(bytes(decode_node_id(writer)))
        except InvalidNodeId:
            raise ExportFailed(
                f"the vault names a writer that is not a NodeId: {writer[:80]!r}"
            ) from None

    if dest.exists() and (not dest.is_dir() or any(dest.iterdir())):
        raise ExportFailed(f"{dest} exists and is not an empty folder", hint="Name a new folder.")
    try:
        dest.mkdir(mode=0o700, parents=True, exist_ok=True)
    except OSError as exc:
        raise ExportFailed(f"cannot create {dest}: {exc.strerror}") from None
    repo = Repo.init(str(dest))
    try:
        parsed = [ShaFile.from_raw_string(raw[0], raw[1:]) for raw in objects]
        repo.object_store.add_objects([(o, None) for o in parsed])
        others: set[str] = set()  # signed a commit, may not write: git will not call it good
        for obj in parsed:
            if isinstance(obj, Commit) and obj.gpgsig:
                try:
                    signer = encode_node_id(node_id_from_bytes(sshsig.parse(obj.gpgsig)[0]))
                except (ValueError, InvalidNodeId):
                    continue
                if signer not in allowed:
                    others.add(signer)
        signers_path = (Path(repo.controldir()) / SIGNERS_FILE).resolve()
        signers_path.write_text(
            "".join(
                f'{n} namespaces="git"{valid_before((until or {}).get(n))} {key}\n'
                for n, key in sorted(allowed.items())
            )
        )
        config = repo.get_config()
        config.set((b"gpg",), b"format", b"ssh")
        config.set((b"gpg", b"ssh"), b"allowedSignersFile", str(signers_path).encode())
        config.write_to_path()
        if head is not None:
            repo.refs[Ref(b"refs/heads/main")] = ObjectID(head.encode("ascii"))
            repo.refs.set_symbolic_ref(Ref(b"HEAD"), Ref(b"refs/heads/main"))
            commit = repo[ObjectID(head.encode("ascii"))]
            if not isinstance(commit, Commit):  # objects of the wrong type, sent by a peer once
                raise ExportFailed(f"the head {head[:40]} of the vault is not a commit")
            build_index_from_tree(repo.path, repo.index_path(), repo.object_store, commit.tree)
    finally:
        repo.close()
    return sorted(others)
