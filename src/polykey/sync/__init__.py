"""Sync: the only place that joins the network and the vaults (clone, pull, serving peers)."""
