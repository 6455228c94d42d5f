"""The network: SSH between nodes (asyncssh), the node's SSH identity, framed JSON-RPC channels."""
