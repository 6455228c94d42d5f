"""The agent: a long-running process that holds the unlocked node and serves the CLI.

``runtime`` locates the per-node runtime folder (socket, status, log, session token);
``protocol`` frames JSON-RPC 2.0 messages on the Unix socket; ``sessions`` issues and checks
session tokens; ``methods`` is the one list of operations the CLI can ask for, used both by the
agent and by the CLI when no agent runs; ``server`` is the socket server and the process hygiene.
"""
