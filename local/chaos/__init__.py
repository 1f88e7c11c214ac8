"""Chaos: the local stack under faults, poison, probes and fuzzing (`python -m local.chaos`, `make chaos`)."""
