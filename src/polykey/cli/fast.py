"""The hot path: `pk secrets cat` and `pk secrets write` answered by a running agent.

When an agent serves the node and the command is a plain one (addresses only, human output),
these few lines do the whole job without importing click, cryptography, dulwich or SQLite. On
anything unusual (options, no agent, an invalid session, an error from the agent) they step aside
and the full CLI runs the command, which gives the same result or the proper error message.
"""

from __future__ import annotations

import os
import sys

stdin_data: bytes | None = None
"""Standard input already read by the fast path, for the full CLI when the fast path steps aside."""


def _node_path(args: list[str]) -> str | None:
    env = os.environ.get("PK_NODE")
    if env:
        return env
    return None  # the default path needs platformdirs: leave it to the full CLI


def try_fast(args: list[str]) -> int | None:
    """Run `secrets cat|write` through the agent; None means "use the full CLI"."""
    if os.environ.get("PK_NO_AGENT") == "1":
        return None
    verb, rest = args[1], args[2:]
    if not rest or any(a.startswith("-") or ":" not in a for a in rest):
        return None
    node = _node_path(args)
    if node is None:
        return None
    from polykey.cli.client import AgentClient, AgentError, AgentGone

    try:
        client = AgentClient.find(node)
    except Exception:
        return None
    if client is None or client.token() is None:
        return None
    try:
        if verb == "cat":
            items = [a.split(":", 1) for a in rest]
            result = client.call("secrets.cat", {"items": items})
            out = sys.stdout.buffer
            for item in result["secrets"]:
                out.write(item["data"])
            out.flush()
            return 0
        if verb == "write" and len(rest) == 1 and not sys.stdin.isatty():
            vault, path = rest[0].split(":", 1)
            if not vault or not path:
                return None
            global stdin_data  # noqa: PLW0603 - handed to the full CLI if this path gives up
            data = stdin_data = sys.stdin.buffer.read()
            client.call("secrets.write", {"vault": vault, "path": path, "data": data})
            return 0
    except (AgentError, AgentGone, KeyError, TypeError):
        return None
    finally:
        client.close()
    return None
