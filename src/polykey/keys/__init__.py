"""The node's identity: the root key, its NodeId, and the recovery code it comes from."""
