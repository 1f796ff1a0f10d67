"""Mutation testing with hand-written semantic mutants: ``python -m tests.mutation`` (docs/evidence.md)."""
