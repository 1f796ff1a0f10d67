"""Simulation tier: the deterministic whole-cluster simulator (tests/sim/) run over seeds."""
