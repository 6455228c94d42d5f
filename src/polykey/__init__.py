"""Polykey: a self-hosted, peer-to-peer secret manager."""

__version__ = "0.1.0"
