"""The laptop stack: local stand-ins that speak the real protocols, so the app runs unchanged.

Nothing in the function app imports this package; it is excluded from deployment (.funcignore).
"""

__all__: list[str] = []
