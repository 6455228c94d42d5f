"""Trust: who may do what with this node's vaults (the ACL)."""
