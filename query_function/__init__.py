"""HTTP trigger `GET /api/devices/{device_id}/predictions` and `GET /api/anomalies`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import azure.functions as func

from shared import wiring
from shared.query import handle_request

log = logging.getLogger(__name__)

# Built at worker start from settings (a bad one fails loading with its name); tests replace it.
_store = wiring.query_store()


def main(req: func.HttpRequest) -> func.HttpResponse:
    """Adapter: HttpRequest in, HttpResponse out; the rules live in `shared.query`."""
    try:
        status, body, headers = handle_request(
            req.route_params, req.params, store=_store, now=datetime.now(UTC)
        )
    except Exception:
        log.exception("query failed unexpectedly")
        status, body, headers = 500, {"error": "internal", "message": "unexpected error"}, {}
    return func.HttpResponse(
        json.dumps(body, separators=(",", ":")),
        status_code=status,
        headers=headers,
        mimetype="application/json",
    )
