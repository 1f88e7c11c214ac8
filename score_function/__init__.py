"""Event Hub trigger (cardinality many): score a batch of reading events and store predictions."""

from __future__ import annotations

import logging
from datetime import UTC, datetime

import azure.functions as func

from shared import telemetry, wiring
from shared.events import IncomingEvent

log = logging.getLogger(__name__)

_app = wiring.score_app()


def _partition(events: list[func.EventHubEvent]) -> str | None:
    metadata = events[0].metadata if events else None
    context = (metadata or {}).get("PartitionContext") or {}
    partition = context.get("PartitionId") if isinstance(context, dict) else None
    return str(partition) if partition is not None else None


# The worker passes `context` when main() names it, and refuses any annotation but a class named
# Context (so not `func.Context | None`); the local host binds only the trigger, hence the default.
def main(events: list[func.EventHubEvent], context: func.Context = None) -> None:
    """Adapter: decode the binding, run the pipeline; raising makes the retry policy redeliver."""
    invocation_id = context.invocation_id if context is not None else telemetry.new_invocation_id()
    with telemetry.invocation(invocation_id):
        _score(events)


def _score(events: list[func.EventHubEvent]) -> None:
    partition = _partition(events)
    incoming = [
        IncomingEvent(
            body=event.get_body(),
            partition=partition,
            offset=None if event.offset is None else str(event.offset),
            sequence_number=event.sequence_number,
            enqueued_time=event.enqueued_time,
        )
        for event in events
    ]
    try:
        _app.pipeline.process(incoming, now=datetime.now(UTC))
    except Exception:
        if _app.pipeline.metrics is not None:
            _app.pipeline.metrics.add("fleetscore.score.failures", 1)
        first = incoming[0].sequence_number if incoming else None
        log.exception(
            "batch of %d events (partition %s, first sequence %s) failed; it will be redelivered",
            len(incoming),
            partition,
            first,
        )
        raise
