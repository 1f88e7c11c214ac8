"""The operator CLI: `python -m fleetscore ...` (query stored predictions over the HTTP API)."""

from .query import QueryClient, QueryError

__all__ = ["QueryClient", "QueryError"]
