"""Stub package: CoCosNet's `models` (see ../README.md)."""
