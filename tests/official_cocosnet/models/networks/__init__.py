"""Stub package: CoCosNet's `models.networks` without its network registry (see ../../README.md)."""
