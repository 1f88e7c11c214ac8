"""HTTP trigger `POST /api/readings`: validate readings and publish one event per device."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from shared import telemetry, wiring
from shared.ingest import handle_ingest
from shared.responses import JsonResponse

log = logging.getLogger(__name__)

# Built at worker start: a bad setting fails loading with its name; the producer is reused.
_app = wiring.ingest_app()


# `context: func.Context = None`: see score_function (the worker passes it, the local host not).
def main(req: func.HttpRequest, context: func.Context = None) -> func.HttpResponse:
    """Adapter: HttpRequest in, HttpResponse out; the rules live in `shared.ingest`."""
    invocation_id = context.invocation_id if context is not None else telemetry.new_invocation_id()
    with telemetry.invocation(invocation_id):
        try:
            result = handle_ingest(
                req.get_body(),
                content_type=req.headers.get("content-type"),
                publisher=_app.publisher,
                now=datetime.now(UTC),
                metrics=_app.metrics,
            )
        except Exception:
            log.exception("ingest failed unexpectedly")
            result = JsonResponse(500, {"error": "internal", "message": "unexpected error; retry"})
    return func.HttpResponse(
        result.encode(),
        status_code=result.status,
        headers=result.headers,
        mimetype="application/json",
    )
