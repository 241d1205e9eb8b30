"""Stub package: CoCosNet's `util` (see ../README.md)."""
