"""The agent's node thread: the one thread that touches the unlocked node.

Jobs run one at a time, in order. A job that waits on the network (a pull, a clone, a ping)
does not stall the others: while it waits, the node thread runs the next queued jobs (other CLI
requests, other peers' requests), then resumes it when its answer is in. So an agent waiting
on a silent peer keeps answering, and two agents that call each other at the same moment do
not deadlock. Jobs therefore interleave only at those waits; code that reads state before a
network call re-checks it inside the transaction that writes after it (sync/client.py).
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable
from concurrent.futures import Executor, Future
from typing import Any

_WAKE = object()  # queued when an awaited answer arrives
_STOP = object()

Job = tuple[Future[Any], Callable[..., Any], tuple[Any, ...], dict[str, Any]]


class NodeWorker(Executor):
    def __init__(self, name: str = "pk-node") -> None:
        self._queue: queue.SimpleQueue[Job | object] = queue.SimpleQueue()
        self._stopped = False
        self._thread = threading.Thread(target=self._main, name=name, daemon=True)
        self._thread.start()

    def submit(self, fn: Callable[..., Any], /, *args: Any, **kwargs: Any) -> Future[Any]:
        if self._stopped:
            raise RuntimeError("the node worker has stopped")
        future: Future[Any] = Future()
        self._queue.put((future, fn, args, kwargs))
        return future

    def _run(self, job: Job) -> None:
        future, fn, args, kwargs = job
        if not future.set_running_or_notify_cancel():
            return
        try:
            future.set_result(fn(*args, **kwargs))
        except BaseException as exc:
            future.set_exception(exc)

    def _main(self) -> None:
        while True:
            item = self._queue.get()
            if item is _STOP:
                return
            if isinstance(item, tuple):
                self._run(item)

    def wait(self, future: Future[Any]) -> Any:
        """The future's result; on the node thread, other jobs run while it is pending."""
        if threading.current_thread() is not self._thread:
            return future.result()
        future.add_done_callback(lambda _: self._queue.put(_WAKE))
        while not future.done():
            item = self._queue.get()
            if item is _STOP:
                self._queue.put(_STOP)  # let the outer loop see it too
                return future.result()
            if isinstance(item, tuple):
                self._run(item)
        return future.result()

    def shutdown(self, wait: bool = True, *, cancel_futures: bool = False) -> None:
        self._stopped = True
        self._queue.put(_STOP)
        if wait:
            self._thread.join(timeout=REPLY_GRACE_S)


# How long stopping the agent waits for a job still running (a peer call times out before this).
REPLY_GRACE_S = 150.0
