"""The HTTP server under the stand-ins of real services (GitHub, Keybase, keyservers, WKD, a
Pkarr relay): threaded, on a free port of one address, its stand-in reachable from the request
handler as ``self.server.standin``."""

from __future__ import annotations

import threading
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer


class LocalHttp:
    def __init__(
        self, standin: object, handler: type[BaseHTTPRequestHandler], host: str = "127.0.0.1"
    ) -> None:
        self.host = host
        self.server = ThreadingHTTPServer((host, 0), handler)
        self.server.daemon_threads = True
        self.server.block_on_close = False
        self.server.standin = standin  # type: ignore[attr-defined]
        self.thread = threading.Thread(
            target=self.server.serve_forever, kwargs={"poll_interval": 0.05}, daemon=True
        )

    @property
    def url(self) -> str:
        return f"http://{self.host}:{self.server.server_address[1]}"

    def start(self) -> None:
        self.thread.start()

    def stop(self) -> None:
        self.server.shutdown()
        self.server.server_close()
