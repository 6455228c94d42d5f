"""How a caller waits for an answer from the network (a module without heavy imports).

By default it simply blocks. The agent installs a waiter that lets its node thread serve other
requests while one of them waits on a peer (agent/worker.py).
"""

from __future__ import annotations

from collections.abc import Callable
from concurrent.futures import Future
from typing import Any

Waiter = Callable[[Future[Any]], Any]


def _block(future: Future[Any]) -> Any:
    return future.result()


_waiter: Waiter = _block


def install(waiter: Waiter) -> None:
    global _waiter  # noqa: PLW0603 - one waiter per process, set by the agent at start
    _waiter = waiter


def wait(future: Future[Any]) -> Any:
    return _waiter(future)
