"""HTTP trigger `GET /api/devices/{device_id}/predictions` and `GET /api/anomalies`."""

from __future__ import annotations

import json
import logging
import os
import threading
from datetime import UTC, datetime

import azure.functions as func

from shared.errors import ConfigError
from shared.query import handle_request
from shared.store import PredictionStore, TableStore

log = logging.getLogger(__name__)

_store: PredictionStore | None = None  # built on first use; tests put an in-memory store here
_store_lock = threading.Lock()


def _build_store() -> PredictionStore:
    """The one place the store is built from app settings (a candidate for shared.wiring)."""
    # AzureWebJobsStorage is the runtime's own setting name, mixed case on purpose.
    conn = os.environ.get("TABLES_CONNECTION") or os.environ.get("AzureWebJobsStorage")  # noqa: SIM112
    if not conn:
        raise ConfigError("TABLES_CONNECTION", "is required (or set AzureWebJobsStorage)")
    return TableStore.from_connection_string(conn, table_prefix=os.environ.get("TABLE_PREFIX", ""))


def _get_store() -> PredictionStore:
    global _store
    with _store_lock:
        if _store is None:
            _store = _build_store()
        return _store


def main(req: func.HttpRequest) -> func.HttpResponse:
    """Adapter: HttpRequest in, HttpResponse out; the rules live in `shared.query`."""
    try:
        status, body, headers = handle_request(
            req.route_params, req.params, store=_get_store(), now=datetime.now(UTC)
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
