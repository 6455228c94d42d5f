"""asyncssh, imported with a quick search for the optional C libraries it looks for.

At import, asyncssh asks ``ctypes.util.find_library`` for liboqs (post-quantum key exchange)
and libnettle (UMAC). On Linux that runs ``ldconfig -p`` and, for a library that is absent,
a C compiler and a linker as well: about 25 ms of every `pk` process that dials a peer. Here
the same libraries are looked for in the linker's usual folders instead (and those of
LD_LIBRARY_PATH), and found the same where a distribution installs them. A library installed
elsewhere is then not used: both are optional to asyncssh, and the algorithms nodes agree on
(curve25519, chacha20-poly1305 or AES-GCM) need neither.

Every module of this package imports asyncssh from here.
"""

from __future__ import annotations

import ctypes.util
import os
import sys
import sysconfig
from pathlib import Path


def _folders() -> list[Path]:
    arch = sysconfig.get_config_var("MULTIARCH") or f"{os.uname().machine}-linux-gnu"
    extra = [p for p in os.environ.get("LD_LIBRARY_PATH", "").split(":") if p]
    usual = ["/lib", "/usr/lib", "/lib64", "/usr/lib64", "/usr/local/lib"]
    return [Path(p) for p in [*extra, *(f"{u}/{arch}" for u in usual), *usual]]


def quick_find_library(name: str) -> str | None:
    """The path of ``lib<name>.so.N`` (the newest N) in the usual folders, as the dynamic linker
    would load it; a bare ``lib<name>.so`` (often a linker script) only when no other is there."""
    stem = f"lib{name}.so"
    for folder in _folders():
        try:
            found = [p for p in folder.glob(f"{stem}*") if p.is_file()]
        except OSError:
            continue
        versions = [(int(p.name[len(stem) + 1 :]), p) for p in found if _version(p.name, stem)]
        if versions:
            return str(max(versions)[1])
        if any(p.name == stem for p in found):
            return str(folder / stem)
    return None


def _version(filename: str, stem: str) -> bool:
    return filename.startswith(f"{stem}.") and filename[len(stem) + 1 :].isdigit()


if sys.platform.startswith("linux"):
    _usual = ctypes.util.find_library
    ctypes.util.find_library = quick_find_library
    try:
        import asyncssh
    finally:
        ctypes.util.find_library = _usual
else:  # elsewhere find_library is quick already
    import asyncssh

__all__ = ["asyncssh", "quick_find_library"]
