"""Checks tier: static checks of the tree (lint, mypy, import contracts, pins, generated protos)."""
