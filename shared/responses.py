"""HTTP results as plain data, so the core never imports `azure.functions`."""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from typing import Any

from .errors import RequestError, ValidationError

__all__ = ["JsonResponse", "from_request_error", "from_validation_error"]


@dataclass(frozen=True, slots=True)
class JsonResponse:
    """A status, a JSON body and extra headers; the function adapter turns it into HttpResponse."""

    status: int
    body: dict[str, Any]
    headers: dict[str, str] = field(default_factory=dict)

    def encode(self) -> bytes:
        """Return the body as compact UTF-8 JSON."""
        return json.dumps(self.body, separators=(",", ":")).encode()


def from_validation_error(exc: ValidationError) -> JsonResponse:
    """400 naming every offending field."""
    return JsonResponse(400, {"error": "validation", "details": [d.to_dict() for d in exc.details]})


def from_request_error(exc: RequestError) -> JsonResponse:
    """The request-level status (413, 415, 404, ...) with the field when one is to blame."""
    body: dict[str, Any] = {"error": exc.code, "message": str(exc)}
    if exc.field:
        body["details"] = [{"field": exc.field, "message": str(exc)}]
    return JsonResponse(exc.status, body)
