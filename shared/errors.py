"""The exception tree: one root, a few typed subclasses that say what the caller can do."""

from __future__ import annotations

from dataclasses import dataclass

__all__ = [
    "ConfigError",
    "ConflictError",
    "FieldError",
    "FleetscoreError",
    "PermanentError",
    "RequestError",
    "TransientError",
    "ValidationError",
]


class FleetscoreError(Exception):
    """Root of every error fleetscore raises on purpose."""


@dataclass(frozen=True, slots=True)
class FieldError:
    """One problem with one field; `index` is the reading's position in its request, if any."""

    field: str
    message: str
    index: int | None = None

    def to_dict(self) -> dict[str, object]:
        """Return the JSON shape used in 400 bodies and dead-letter reasons."""
        out: dict[str, object] = {"field": self.field, "message": self.message}
        if self.index is not None:
            out = {"index": self.index, **out}
        return out

    def __str__(self) -> str:
        where = f"readings[{self.index}]." if self.index is not None else ""
        return f"{where}{self.field}: {self.message}"


class ValidationError(FleetscoreError):
    """Input broke a contract; `details` names every offending field."""

    def __init__(self, details: list[FieldError]) -> None:
        if not details:
            raise ValueError("ValidationError needs at least one FieldError")
        self.details = details
        shown = "; ".join(str(d) for d in details[:5])
        more = f" (+{len(details) - 5} more)" if len(details) > 5 else ""
        super().__init__(shown + more)

    @classmethod
    def single(cls, field: str, message: str, index: int | None = None) -> ValidationError:
        """Build the common one-field case."""
        return cls([FieldError(field, message, index)])

    @property
    def field(self) -> str:
        """The first offending field, for callers that report only one."""
        return self.details[0].field


class RequestError(FleetscoreError):
    """The request as a whole is unacceptable (too large, not JSON, unknown route)."""

    def __init__(self, status: int, code: str, message: str, *, field: str | None = None) -> None:
        self.status = status
        self.code = code
        self.field = field
        super().__init__(message)


class TransientError(FleetscoreError):
    """A dependency failed in a way that may pass; `retry_after` is its hint in seconds."""

    def __init__(
        self, message: str, *, retry_after: float | None = None, status: int | None = None
    ) -> None:
        self.retry_after = retry_after
        self.status = status
        super().__init__(message)


class ConflictError(TransientError):
    """Someone else changed the row since it was read: read it again, then retry."""


class PermanentError(FleetscoreError):
    """A dependency refused the request itself; sending it again will not help."""

    def __init__(self, message: str, *, status: int | None = None) -> None:
        self.status = status
        super().__init__(message)


class ConfigError(FleetscoreError):
    """An app setting is missing or malformed; `setting` names it."""

    def __init__(self, setting: str, message: str) -> None:
        self.setting = setting
        super().__init__(f"{setting}: {message}")
