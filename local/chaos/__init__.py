"""Chaos: the stack under faults, poison, probes and fuzzing (`python -m local.chaos`)."""
