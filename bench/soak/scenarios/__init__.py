"""The soak's scenarios: every module here is imported by `bench.soak.core.discover()`."""
