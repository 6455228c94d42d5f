"""asyncssh imported with the quick library search (network/sshlib.py) finds what the slow
search finds, and leaves ``ctypes.util.find_library`` as it was."""

from __future__ import annotations

import ctypes.util
import sys
from pathlib import Path

import pytest

from polykey.network.sshlib import asyncssh, quick_find_library

pytestmark = pytest.mark.skipif(not sys.platform.startswith("linux"), reason="Linux only")


@pytest.mark.parametrize("name", ["c", "ssl", "nettle", "no-such-library-here"])
def test_the_quick_search_finds_what_ldconfig_finds(name: str) -> None:
    usual = ctypes.util.find_library(name)
    quick = quick_find_library(name)
    if usual is None:
        assert quick is None
    else:
        assert quick is not None and Path(quick).name == usual
        ctypes.CDLL(quick)  # and the dynamic linker loads it


def test_find_library_is_given_back_and_asyncssh_works() -> None:
    assert ctypes.util.find_library is not quick_find_library
    assert asyncssh.SSHClientConnection is not None
