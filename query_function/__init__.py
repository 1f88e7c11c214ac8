"""HTTP trigger `GET /api/devices/{device_id}/predictions` and `GET /api/anomalies`."""

from __future__ import annotations

import json
import logging
from datetime import UTC, datetime

import azure.functions as func

from shared import telemetry, wiring
from shared.query import handle_request

log = logging.getLogger(__name__)

# Built at worker start from settings (a bad one fails loading with its name); tests replace it.
_store = wiring.query_store()


# `context: func.Context = None`: see score_function (the worker passes it, the local host not).
def main(req: func.HttpRequest, context: func.Context = None) -> func.HttpResponse:
    """Adapter: HttpRequest in, HttpResponse out; the rules live in `shared.query`."""
    invocation_id = context.invocation_id if context is not None else telemetry.new_invocation_id()
    with telemetry.invocation(invocation_id):
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
