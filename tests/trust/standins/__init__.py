"""Stand-ins for identity providers on loopback, speaking their real APIs (test code only)."""
