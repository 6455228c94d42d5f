"""A raw request to a node's agent, as its own process so that it can be killed: no CLI, and no
fallback to the node file when the agent is gone.

`python -m bench.soak.rawclient METHOD PARAMS_JSON` (the node from PK_NODE). For
`secrets.write_many`, the values of `items` are text and are sent as bytes. Exit 0 when the agent
answered with a result, 1 when it answered with an error, 3 when it could not be reached or the
connection broke.
"""

from __future__ import annotations

import json
import os
import sys

from polykey.cli.client import AgentClient, AgentDied, AgentError, AgentGone


def main(argv: list[str]) -> int:
    method, raw = argv
    params = json.loads(raw)
    if method == "secrets.write_many":
        params["items"] = [[path, value.encode()] for path, value in params["items"]]
        params.setdefault("message", "Soak: several secrets in one request.")
    try:
        client = AgentClient.find(os.environ["PK_NODE"])
        if client is None:
            return 3
        try:
            client.call(method, params)
        finally:
            client.close()
    except (AgentGone, AgentDied):  # AgentDied: it stopped (was killed) before it answered
        return 3
    except AgentError as exc:
        sys.stderr.write(f"agent error: {exc.message}\n")
        return 1
    return 0


if __name__ == "__main__":
    raise SystemExit(main(sys.argv[1:]))
