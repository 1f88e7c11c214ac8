"""Capacity plan: a fleet, measured per-hop figures and Azure's documented limits in, a plan out.

Pure arithmetic over frozen dataclasses; the only I/O is `load_figures`, which reads the
benchmark results file. Every number in the plan carries the line of arithmetic that made it,
so an engineer can check it by hand. Units are sized so that each runs at `headroom` of its
capacity (0.7 = 70 % busy at the planned load).

Example:
    >>> plan = make_plan(Fleet(devices=100_000, interval_s=10.0), figures_from({}))
    >>> plan.load["readings_per_s"]
    10000.0
    >>> plan.binds_first.name
    'Table Storage account'
"""

from __future__ import annotations

import json
import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

from shared.events import encode_device_events
from shared.readings import MAX_READINGS, Reading

__all__ = [
    "DEFAULT_FIGURES",
    "LIMITS",
    "AmlDeployment",
    "Figure",
    "Fleet",
    "Hop",
    "Limit",
    "Plan",
    "figures_from",
    "load_figures",
    "make_plan",
    "number",
    "request_events",
]


@dataclass(frozen=True, slots=True)
class Limit:
    """A documented Azure limit: its value, what it counts, and the page that states it."""

    value: float
    what: str
    doc: str


_EH_SCALE = "Azure Event Hubs docs, 'Scaling with Event Hubs' (event-hubs-scalability)"
_EH_QUOTAS = "Azure Event Hubs docs, 'Quotas and limits' (event-hubs-quotas) and FAQ"
_TABLES = "Azure Storage docs, 'Scalability and performance targets for Table storage'"
_AML_429 = (
    "Azure ML docs, 'Troubleshooting online endpoints', HTTP status codes: 429 Too many pending "
    "requests"
)

# Checked against stored copies of these pages (2026-11-27). Event Hubs Standard counts ingress
# per throughput unit by bytes or events, "whichever comes first"; MB is read as 10^6 bytes,
# the conservative side. The scalability page advises about one partition per TU (a partition
# takes about a TU of ingress), and in a consumer group one reader holds a partition at a time,
# so partitions also cap score hosts. The 40-TU Standard ceiling is from the quotas page and
# the Event Hubs FAQ ("the 40 TU threshold"; older API references still say 20 self-serve);
# past it, Premium or Dedicated. Table Storage counts each entity of a batch transaction
# against the account's target ("20,000 transactions per second", 1 KiB entities).
LIMITS: dict[str, Limit] = {
    "tu_ingress_events": Limit(1_000, "events/s ingress per throughput unit", _EH_SCALE),
    "tu_ingress_bytes": Limit(1_000_000, "bytes/s (1 MB/s) ingress per throughput unit", _EH_SCALE),
    "tu_egress_events": Limit(4_096, "events/s egress per throughput unit", _EH_SCALE),
    "tu_egress_bytes": Limit(2_000_000, "bytes/s (2 MB/s) egress per throughput unit", _EH_SCALE),
    "partitions_per_hub": Limit(32, "partitions per event hub on Standard", _EH_QUOTAS),
    "tus_per_namespace": Limit(40, "throughput units per Standard namespace", _EH_QUOTAS),
    "table_partition": Limit(2_000, "entities/s per table partition (PartitionKey)", _TABLES),
    "table_account": Limit(20_000, "entities/s per storage account", _TABLES),
    "aml_admitted": Limit(
        2, "x max_concurrent_requests_per_instance x instances in flight, then 429", _AML_429
    ),
}

_DEFAULT = "not measured here: default"


@dataclass(frozen=True, slots=True)
class Figure:
    """One per-hop figure, measured or a default, with where it came from."""

    name: str
    value: float
    unit: str
    source: str

    @property
    def measured(self) -> bool:
        """True when the value came from a results file."""
        return not self.source.startswith(_DEFAULT)


# Conservative defaults: the machine-measured costs in ARCHITECTURE.md, rounded down.
_ARCH = "ARCHITECTURE.md"
DEFAULT_FIGURES: dict[str, tuple[float, str, str]] = {
    "ingest_readings_per_s_b100": (
        2_000, "readings/s per ingest instance, 100-reading requests", "no measurement yet"),
    "eventhubs_produce_events_per_s": (
        5_000, "events/s per ingest instance", f"{_ARCH}: ~7,000 through the emulator"),
    "eventhubs_consume_events_per_s": (
        10_000, "events/s per partition reader", f"{_ARCH}: 11,000-13,000"),
    "e2e_score_host_readings_per_cpu_s": (
        800, "readings per score-host CPU-second, end to end", "no measurement yet"),
    "table_write_cpu_us_per_prediction": (
        830, "us score-host CPU per stored entity", f"{_ARCH}: azure-data-tables batches"),
    "aml_http_readings_per_s_per_worker": (
        5_000, "readings/s per AML worker", f"{_ARCH}: 61,000 at 2,000 readings/request"),
    "storage_ceiling_entities_per_s": (
        5_000, "entities/s, the local Azurite ceiling", f"{_ARCH}: ~190 us per entity"),
}  # fmt: skip


def load_figures(path: Path) -> dict[str, float]:
    """Read the numeric figures of a results file: `{"name": 123.4}` or `{"name": {"value": …}}`.

    Raises:
        OSError: the file cannot be read.
        ValueError: it is not a JSON object.
    """
    doc = json.loads(path.read_text())
    if not isinstance(doc, dict):
        raise ValueError(f"{path} is not a JSON object")
    out: dict[str, float] = {}
    for name, value in doc.items():
        if isinstance(value, Mapping):
            value = value.get("value")
        if isinstance(value, int | float) and not isinstance(value, bool) and value > 0:
            out[str(name)] = float(value)
    return out


def figures_from(measured: Mapping[str, float], source: str = "") -> dict[str, Figure]:
    """The figures the plan needs: measured where `measured` has them, else the defaults."""
    out = {}
    for name, (value, unit, why) in DEFAULT_FIGURES.items():
        if name in measured:
            out[name] = Figure(name, measured[name], unit, f"measured: {source or 'results'}")
        else:
            out[name] = Figure(name, value, unit, f"{_DEFAULT} ({why})")
    return out


@dataclass(frozen=True, slots=True)
class Fleet:
    """The load: how many devices, how often each reads, how they send.

    `readings_per_request` is how many of one device's readings travel in one request; the
    ingest publishes one event per device per request, so events/s = readings/s / it. The
    simulator sends 200-reading requests holding one reading each from 200 devices: 1.
    """

    devices: int
    interval_s: float
    readings_per_request: int = 1
    metrics: int = 6
    headroom: float = 0.7
    anomaly_rate: float = 0.01

    def __post_init__(self) -> None:
        if self.devices < 1 or self.interval_s <= 0:
            raise ValueError("devices and interval must be positive")
        if not 1 <= self.readings_per_request <= MAX_READINGS:
            raise ValueError(f"readings per request must be 1..{MAX_READINGS} (the ingest limit)")
        if not 1 <= self.metrics <= 32:
            raise ValueError("metrics must be 1..32 (the reading contract)")
        if not 0 < self.headroom <= 1:
            raise ValueError("headroom must be in (0, 1]")


@dataclass(frozen=True, slots=True)
class AmlDeployment:
    """What one AML instance admits and serves (model/deploy/deployment.yml)."""

    max_concurrent_requests_per_instance: int = 4
    worker_count: int = 4
    source: str = "built-in (4 and 4, as model/deploy/deployment.yml ships)"


@dataclass(frozen=True, slots=True)
class Hop:
    """One hop: demand, one unit's capacity, units needed at the headroom, the limit, the sums.

    `need` is the unrounded unit count; `cap` the most units Azure allows (None: scales out),
    so `room` = cap / need is how many times the fleet can grow before this limit binds.
    """

    name: str
    demand: float
    demand_unit: str
    capacity: float
    unit: str
    need: float
    units: int
    limit: str
    doc: str
    cap: int | None
    arithmetic: tuple[str, ...]

    @property
    def room(self) -> float | None:
        """Cap / need: below 1 the plan already needs more than one Standard unit allows."""
        return None if self.cap is None else self.cap / self.need


@dataclass(frozen=True, slots=True)
class Plan:
    """The result: the load, every hop, the deployment and what binds first."""

    fleet: Fleet
    figures: dict[str, Figure]
    aml: AmlDeployment
    load: dict[str, float]
    derivation: tuple[str, ...]
    hops: tuple[Hop, ...]
    deployment: dict[str, int | str]
    deployment_lines: tuple[str, ...]
    notes: tuple[str, ...]

    @property
    def binds_first(self) -> Hop:
        """The capped hop with the least room."""
        return min((h for h in self.hops if h.room is not None), key=lambda h: h.room or 0.0)

    def room_line(self, hop: Hop) -> str:
        """`32 partitions / 23.83 needed = 1.34 x the fleet = 134,268 devices`."""
        room = hop.room or 0.0
        devices = math.floor(self.fleet.devices * room)
        return (
            f"{hop.cap} {hop.unit}{'s' if hop.cap != 1 else ''} / {number(hop.need)} needed "
            f"= {room:.2f} x the fleet = {number(devices)} devices"
        )


def number(x: float) -> str:
    """`12,345`, `3.5`, `0.0714`: thousands separated, few decimals, exact when whole."""
    if x == int(x) or abs(x) >= 100:
        return f"{x:,.0f}"
    if abs(x) >= 1:
        return f"{x:,.2f}".rstrip("0").rstrip(".")
    return f"{x:.{2 - math.floor(math.log10(abs(x)))}f}".rstrip("0")  # 3 significant digits


def _units(n: int, unit: str) -> str:
    return f"{n} {unit}{'' if n == 1 else 's'}"


def _up(x: float) -> int:
    return max(1, math.ceil(x - 1e-9))


_DEVICE = "compressor-012345"
_NAMES = ("temperature_c", "vibration_mm_s", "pressure_kpa", "rpm", "current_a", "flow_m3h")
_SAMPLE = (71.234, 3.118, 412.507, 2951.042, 41.873, 118.396, 38.214, 12.055)


def request_events(metrics: int, readings_per_request: int) -> tuple[int, int]:
    """(events, body bytes) the ingest publishes for one device's request, encoded for real.

    The readings look like the simulator's: its metric names (then `metric_07`…), values
    rounded to 3 decimals, a 17-character device id.
    """
    names = [*_NAMES, "oil_temp_c", *(f"metric_{i:02d}" for i in range(7, 32))][:metrics]
    values = {name: _SAMPLE[i % len(_SAMPLE)] for i, name in enumerate(names)}
    t0 = datetime(2026, 11, 27, 7, 0, tzinfo=UTC)
    readings = [
        Reading(_DEVICE, t0 + timedelta(seconds=i), values) for i in range(readings_per_request)
    ]
    events = encode_device_events({_DEVICE: readings}, ingested_at=t0)
    return len(events), sum(len(e.body) for e in events)


def _hop(
    name: str,
    units_of: tuple[str, str],
    limit: tuple[str, str, int | None],
    headroom: float,
    needs: Sequence[tuple[str, float, float]],
    explain: Sequence[str] = (),
) -> Hop:
    """Size a hop by the largest of `needs`, (what, demand, capacity per unit) rows.

    `units_of` is (demand unit, hop unit); `limit` is (limit, its doc, cap in units).
    """
    lines, need = list(explain), 0.0
    for what, demand, capacity in needs:
        x = demand / (capacity * headroom)
        need = max(need, x)
        lines.append(
            f"{what}: {number(demand)} / ({number(capacity)} x {headroom:g}) = {number(x)}"
        )
    units = _up(need)
    lines.append(
        f"{'largest, ' if len(needs) > 1 else ''}rounded up -> {_units(units, units_of[1])}"
    )
    _, demand, capacity = needs[0]
    return Hop(name, demand, units_of[0], capacity, units_of[1], need, units, *limit, tuple(lines))


def _limit(key: str, cap: int | None) -> tuple[str, str, int | None]:
    return f"{number(LIMITS[key].value)} {LIMITS[key].what}", LIMITS[key].doc, cap


def make_plan(
    fleet: Fleet,
    figures: Mapping[str, Figure],
    aml: AmlDeployment | None = None,
    *,
    score_max_concurrency: int = 4,
) -> Plan:
    """Size every hop for `fleet` at its headroom; `Plan.binds_first` names the tightest limit."""
    aml = aml or AmlDeployment()
    f = {name: fig.value for name, fig in figures.items()}
    lim = {key: limit.value for key, limit in LIMITS.items()}
    h, n, k = fleet.headroom, fleet.devices, fleet.readings_per_request
    per_request, request_bytes = request_events(fleet.metrics, k)
    readings = n / fleet.interval_s
    requests = readings / k
    events = requests * per_request
    bytes_s = requests * request_bytes
    anomalies = readings * fleet.anomaly_rate
    entities = readings + events + anomalies
    derivation = (
        f"readings/s = {number(n)} devices / {number(fleet.interval_s)} s "
        f"= {number(readings)} readings/s",
        f"events/s = {number(readings)} readings/s / {k} reading(s) per device per request "
        f"x {per_request} event(s) per request = {number(events)} events/s",
        f"bytes/s = {number(requests)} requests/s x {number(request_bytes)} bytes per request's "
        f"events ({k} reading(s) of {fleet.metrics} metrics, encoded as the ingest does) "
        f"= {number(bytes_s)} bytes/s",
        f"entities/s = {number(readings)} predictions + {number(events)} device states + "
        f"{number(anomalies)} anomalies ({fleet.anomaly_rate:.0%}) + ~0 dead letters "
        f"= {number(entities)} entities/s",
        "  assumed: one device state per device per scored batch; a batch spans seconds and a "
        f"device sends every {number(fleet.interval_s * k)} s, so one state write per event",
    )
    ingest = _hop(
        "Ingest Function (HTTP)",
        ("readings/s", "instance"),
        ("scales out (the Functions plan's instance limit)", "", None),
        h,
        (
            ("by readings", readings, f["ingest_readings_per_s_b100"]),
            ("by events produced", events, f["eventhubs_produce_events_per_s"]),
        ),
    )
    tus = _hop(
        "Event Hubs throughput units",
        ("events/s", "TU"),
        _limit("tus_per_namespace", int(lim["tus_per_namespace"])),
        h,
        (
            ("ingress events", events, lim["tu_ingress_events"]),
            ("ingress bytes", bytes_s, lim["tu_ingress_bytes"]),
            ("egress events (1 consumer group)", events, lim["tu_egress_events"]),
            ("egress bytes", bytes_s, lim["tu_egress_bytes"]),
        ),
    )
    table_us, per_reading = f["table_write_cpu_us_per_prediction"], entities / readings
    by_tables = 1e6 / (table_us * per_reading)
    per_host = min(f["e2e_score_host_readings_per_cpu_s"], by_tables)
    score = _hop(
        "Score Function hosts",
        ("readings/s", "host"),
        ("one host per partition at most", "", None),
        h,
        (("by readings", readings, per_host),),
        (
            f"table writes alone: 1,000,000 us / ({number(table_us)} us x "
            f"{number(per_reading)} entities per reading) = {number(by_tables)} readings/s",
            f"end to end: {number(f['e2e_score_host_readings_per_cpu_s'])} readings/s per "
            f"CPU-second; 1 Python worker = 1 core per host: the lower, {number(per_host)}",
        ),
    )
    partitions = _hop(
        "Event Hubs partitions",
        ("events/s", "partition"),
        _limit("partitions_per_hub", int(lim["partitions_per_hub"])),
        h,
        (
            ("ingress (about 1 TU each)", events, lim["tu_ingress_events"]),
            ("one reader each", events, f["eventhubs_consume_events_per_s"]),
            ("one per score host", readings, per_host),
        ),
    )
    per_worker, mcr = (
        f["aml_http_readings_per_s_per_worker"],
        aml.max_concurrent_requests_per_instance,
    )
    in_flight = readings / per_worker
    aml_hop = _hop(
        "AML online endpoint",
        ("readings/s", "instance"),
        _limit("aml_admitted", None),
        h,
        (
            ("by readings", readings, per_worker * aml.worker_count),
            ("by requests in flight", in_flight, mcr),
        ),
        (
            f"per instance: {number(per_worker)} readings/s per worker x {aml.worker_count} "
            f"workers = {number(per_worker * aml.worker_count)} readings/s",
            f"in flight (Little's law): {number(readings)} / {number(per_worker)} "
            f"= {number(in_flight)} busy workers; {mcr} served at once per instance",
        ),
    )
    account = _hop(
        "Table Storage account",
        ("entities/s", "account"),
        _limit("table_account", 1),
        h,
        (("entities", entities, lim["table_account"]),),
    )
    per_device = 1 / fleet.interval_s
    hot = _hop(
        "Table Storage partition (hottest)",
        ("entities/s", "partition"),
        _limit("table_partition", 1),
        h,
        (
            ("Anomalies (PartitionKey = day)", anomalies, lim["table_partition"]),
            (
                "Predictions + state row (PartitionKey = device)",
                per_device * (1 + 1 / k),
                lim["table_partition"],
            ),
        ),
    )
    standard = partitions.units <= (partitions.cap or 0) and tus.units <= (tus.cap or 0)
    tier = "Standard" if standard else "Premium/Dedicated"
    deployment: dict[str, int | str] = {
        "eventhubs_tier": tier,
        "partitions": partitions.units,
        "throughput_units": tus.units,
        "ingest_instances": ingest.units,
        "score_hosts": score.units,
        "aml_instances": aml_hop.units,
        "storage_accounts": account.units,
    }
    over = (
        f": over Standard's {partitions.cap} partitions per hub or {tus.cap} TUs per namespace, "
        "so Premium (processing units, up to 100 partitions per hub) or Dedicated"
    )
    lines = (
        f"Event Hubs: {tier}, {_units(partitions.units, 'partition')}, {tus.units} TUs"
        + ("" if standard else over),
        f"Ingest Function: {_units(ingest.units, 'instance')}",
        f"Score Function: {_units(score.units, 'host')}, one reader per partition",
        f"AML endpoint: {_units(aml_hop.units, 'instance')} of {aml.worker_count} workers, "
        f"max_concurrent_requests_per_instance {mcr} ({aml.source})",
        f"Table Storage: {_units(account.units, 'storage account')}",
    )
    peak = score.units * score_max_concurrency
    notes = [
        "Standard fixes a hub's partition count at creation: size it for the fleet you expect.",
        "Azure recommends at least 3 AML instances in production (room for upgrades).",
        f"Peak AML concurrency: {score.units} hosts x SCORE_MAX_CONCURRENCY "
        f"{score_max_concurrency} = {peak} requests vs 2 x {mcr} x {aml_hop.units} = "
        f"{2 * mcr * aml_hop.units} admitted; bursts above that get 429, which the score "
        "function retries and cuts its concurrency on.",
        f"On a laptop the Azurite ceiling, {number(f['storage_ceiling_entities_per_s'])} "
        "entities/s, bounds a run long before Azure's targets do.",
    ]
    if account.units > 1:
        notes.append(
            f"One storage account cannot take {number(entities)} entities/s at {h:.0%}: shard "
            f"the fleet over {account.units} stacks (ingest, hub, function app, storage account "
            "each; devices assigned by id). TABLE_PREFIX only separates tables inside one "
            "account and does not raise its target. Sending several readings per device per "
            "request cuts events and state writes."
        )
    load = {
        "readings_per_s": readings,
        "requests_per_s": requests,
        "events_per_s": events,
        "bytes_per_s": bytes_s,
        "request_event_bytes": float(request_bytes),
        "entities_per_s": entities,
    }
    hops = (ingest, tus, partitions, score, aml_hop, account, hot)
    return Plan(fleet, dict(figures), aml, load, derivation, hops, deployment, lines, tuple(notes))
