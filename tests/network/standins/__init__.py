"""Local stand-ins for what discovery talks to: routers, relays, DNS, DHT nodes, LAN nodes."""

from __future__ import annotations

import json
import sys
from typing import Any


def serve_events_until_stdin_closes(router: Any) -> None:
    """A router stand-in run as its own process (inside a namespace): its events printed as
    JSON lines, "ready" once it serves, and served until its standard input closes."""

    def show(doc: dict[str, Any]) -> None:
        print(json.dumps(doc), flush=True)

    router.on_event = show
    router.start()
    print("ready", flush=True)
    sys.stdin.read()
    router.close()
