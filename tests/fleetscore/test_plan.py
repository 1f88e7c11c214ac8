"""The capacity plan: its arithmetic for a few fleets, the binding limit, and the CLI around it."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

import pytest

from fleetscore.__main__ import main
from fleetscore.plan import (
    DEFAULT_FIGURES,
    AmlDeployment,
    Fleet,
    figures_from,
    load_figures,
    make_plan,
    number,
    request_events,
)
from fleetscore.plan_cli import parse_interval, read_deployment

REPO = Path(__file__).resolve().parents[2]
DEFAULTS = figures_from({})
PLAN_100K = ["plan", "--devices", "100000", "--interval", "10s"]


def test_make_plan_100000_devices_at_10s_sizes_every_hop() -> None:
    plan = make_plan(Fleet(100_000, 10.0), DEFAULTS)

    assert plan.deployment == {
        "eventhubs_tier": "Standard",
        "partitions": 24,
        "throughput_units": 15,
        "ingest_instances": 8,
        "score_hosts": 24,
        "aml_instances": 1,
        "storage_accounts": 2,
    }
    assert plan.load == {
        "readings_per_s": 10_000.0,
        "requests_per_s": 10_000.0,
        "events_per_s": 10_000.0,
        "bytes_per_s": 2_320_000.0,
        "request_event_bytes": 232.0,
        "entities_per_s": 20_100.0,
    }
    assert plan.derivation[0] == "readings/s = 100,000 devices / 10 s = 10,000 readings/s"
    assert plan.derivation[3] == (
        "entities/s = 10,000 predictions + 10,000 device states + 100 anomalies (1%) + "
        "~0 dead letters = 20,100 entities/s"
    )
    hops = {h.name: h for h in plan.hops}
    assert hops["Event Hubs throughput units"].arithmetic == (
        "ingress events: 10,000 / (1,000 x 0.7) = 14.29",
        "ingress bytes: 2,320,000 / (1,000,000 x 0.7) = 3.31",
        "egress events (1 consumer group): 10,000 / (4,096 x 0.7) = 3.49",
        "egress bytes: 2,320,000 / (2,000,000 x 0.7) = 1.66",
        "largest, rounded up -> 15 TUs",
    )
    assert hops["Score Function hosts"].arithmetic == (
        "table writes alone: 1,000,000 us / (830 us x 2.01 entities per reading) = 599 readings/s",
        "end to end: 800 readings/s per CPU-second; 1 Python worker = 1 core per host: "
        "the lower, 599",
        "by readings: 10,000 / (599 x 0.7) = 23.83",
        "rounded up -> 24 hosts",
    )
    assert hops["Event Hubs partitions"].arithmetic == (
        "ingress (about 1 TU each): 10,000 / (1,000 x 0.7) = 14.29",
        "one reader each: 10,000 / (10,000 x 0.7) = 1.43",
        "one per score host: 10,000 / (599 x 0.7) = 23.83",
        "largest, rounded up -> 24 partitions",
    )
    assert hops["Table Storage account"].arithmetic == (
        "entities: 20,100 / (20,000 x 0.7) = 1.44",
        "rounded up -> 2 accounts",
    )


def test_make_plan_100000_devices_binds_first_on_the_storage_account() -> None:
    plan = make_plan(Fleet(100_000, 10.0), DEFAULTS)

    first = plan.binds_first
    assert first.name == "Table Storage account"
    assert first.limit == "20,000 entities/s per storage account"
    assert "Table storage" in first.doc
    assert plan.room_line(first) == ("1 account / 1.44 needed = 0.70 x the fleet = 69,651 devices")
    rooms = {h.name: round(h.room, 2) for h in plan.hops if h.room is not None}
    assert rooms == {
        "Event Hubs throughput units": 2.8,
        "Event Hubs partitions": 1.34,
        "Table Storage account": 0.7,
        "Table Storage partition (hottest)": 14.0,
    }
    assert any("TABLE_PREFIX only separates tables" in n for n in plan.notes)


def test_make_plan_small_fleet_needs_one_of_everything() -> None:
    plan = make_plan(Fleet(1_000, 60.0), DEFAULTS)

    assert plan.derivation[0] == "readings/s = 1,000 devices / 60 s = 16.67 readings/s"
    assert plan.deployment == {
        "eventhubs_tier": "Standard",
        "partitions": 1,
        "throughput_units": 1,
        "ingest_instances": 1,
        "score_hosts": 1,
        "aml_instances": 1,
        "storage_accounts": 1,
    }
    assert plan.binds_first.name == "Table Storage account"
    assert plan.room_line(plan.binds_first) == (
        "1 account / 0.00239 needed = 417.91 x the fleet = 417,910 devices"
    )
    assert not any("TABLE_PREFIX" in n for n in plan.notes)


def test_make_plan_batched_devices_cut_events_and_state_writes() -> None:
    plan = make_plan(Fleet(100_000, 10.0, readings_per_request=10), DEFAULTS)

    assert plan.load["events_per_s"] == 1_000.0
    assert plan.load["entities_per_s"] == 11_100.0
    assert plan.deployment["storage_accounts"] == 1
    # Fewer, fatter events: bytes now bind the TUs, not the event count.
    tus = next(h for h in plan.hops if h.unit == "TU")
    assert tus.arithmetic[:2] == (
        "ingress events: 1,000 / (1,000 x 0.7) = 1.43",
        "ingress bytes: 1,807,000 / (1,000,000 x 0.7) = 2.58",
    )
    assert plan.deployment["throughput_units"] == 3
    hops = {h.name: h for h in plan.hops}
    # 1,000,000 / (830 x 1.11) = 1,085 > 800: the end-to-end figure is the lower one now.
    assert hops["Score Function hosts"].capacity == 800
    assert plan.deployment["score_hosts"] == 18
    assert plan.deployment["partitions"] == 18


def test_make_plan_over_32_partitions_says_premium_or_dedicated() -> None:
    plan = make_plan(Fleet(500_000, 10.0), DEFAULTS)

    assert plan.deployment["eventhubs_tier"] == "Premium/Dedicated"
    assert plan.deployment["partitions"] == 120
    assert plan.deployment_lines[0] == (
        "Event Hubs: Premium/Dedicated, 120 partitions, 72 TUs: over Standard's 32 partitions "
        "per hub or 40 TUs per namespace, so Premium (processing units, up to 100 partitions "
        "per hub) or Dedicated"
    )


def test_make_plan_measured_slow_score_host_makes_partitions_bind_first() -> None:
    figures = figures_from({"e2e_score_host_readings_per_cpu_s": 300.0}, "bench/results.json")

    plan = make_plan(Fleet(100_000, 10.0), figures)

    assert plan.deployment["score_hosts"] == 48
    assert plan.deployment["partitions"] == 48
    assert plan.deployment["eventhubs_tier"] == "Premium/Dedicated"
    assert plan.binds_first.name == "Event Hubs partitions"
    assert plan.room_line(plan.binds_first) == (
        "32 partitions / 47.62 needed = 0.67 x the fleet = 67,200 devices"
    )


def test_make_plan_aml_sized_by_deployment_workers() -> None:
    figures = figures_from({"aml_http_readings_per_s_per_worker": 1_000.0}, "r.json")

    plan = make_plan(Fleet(100_000, 10.0), figures, AmlDeployment(2, 2, "test"))

    hop = next(h for h in plan.hops if h.name == "AML online endpoint")
    assert hop.arithmetic == (
        "per instance: 1,000 readings/s per worker x 2 workers = 2,000 readings/s",
        "in flight (Little's law): 10,000 / 1,000 = 10 busy workers; 2 served at once per instance",
        "by readings: 10,000 / (2,000 x 0.7) = 7.14",
        "by requests in flight: 10 / (2 x 0.7) = 7.14",
        "largest, rounded up -> 8 instances",
    )
    assert plan.deployment["aml_instances"] == 8


def test_figures_from_marks_defaults_and_measured() -> None:
    figures = figures_from({"ingest_readings_per_s_b100": 4_000.0}, "bench/results.json")

    assert set(figures) == set(DEFAULT_FIGURES)
    assert figures["ingest_readings_per_s_b100"].value == 4_000.0
    assert figures["ingest_readings_per_s_b100"].source == "measured: bench/results.json"
    assert figures["ingest_readings_per_s_b100"].measured
    table = figures["table_write_cpu_us_per_prediction"]
    assert (table.value, table.measured) == (830, False)
    assert table.source.startswith("not measured here: default (")


def test_load_figures_keeps_positive_numbers_only(tmp_path: Path) -> None:
    path = tmp_path / "results.json"
    path.write_text(
        json.dumps(
            {
                "eventhubs_produce_events_per_s": 7123.5,
                "ingest_readings_per_s_b100": {"value": 3000, "runs": 3},
                "aml_http_readings_per_s_per_worker": "fast",
                "storage_ceiling_entities_per_s": True,
                "table_write_cpu_us_per_prediction": 0,
            }
        )
    )

    assert load_figures(path) == {
        "eventhubs_produce_events_per_s": 7123.5,
        "ingest_readings_per_s_b100": 3000.0,
    }


def test_request_events_encodes_like_the_ingest() -> None:
    assert request_events(6, 1) == (1, 232)
    events, size = request_events(32, 5_000)
    assert events > 1  # over 960 KiB: the ingest splits one device's request
    assert size > 960 * 1024


@pytest.mark.parametrize(
    ("kwargs", "message"),
    [
        ({"devices": 0, "interval_s": 10.0}, "devices and interval"),
        ({"devices": 10, "interval_s": 0.0}, "devices and interval"),
        ({"devices": 10, "interval_s": 1.0, "readings_per_request": 5_001}, "1..5000"),
        ({"devices": 10, "interval_s": 1.0, "metrics": 33}, "metrics"),
        ({"devices": 10, "interval_s": 1.0, "headroom": 1.5}, "headroom"),
    ],
)
def test_fleet_rejects_impossible_input(kwargs: dict[str, float], message: str) -> None:
    with pytest.raises(ValueError, match=message):
        Fleet(**kwargs)  # type: ignore[arg-type]


def test_number_formats_for_reading() -> None:
    values = (20_100, 14.2857, 2.0, 0.1, 599.4, 0.0714285, 0.0000714285)
    assert [number(x) for x in values] == [
        "20,100",
        "14.29",
        "2",
        "0.1",
        "599",
        "0.0714",
        "0.0000714",
    ]


@pytest.mark.parametrize(
    ("text", "seconds"), [("10s", 10.0), ("1m", 60.0), ("500ms", 0.5), ("2h", 7200.0), ("15", 15.0)]
)
def test_parse_interval_units(text: str, seconds: float) -> None:
    assert parse_interval(text) == seconds


@pytest.mark.parametrize("text", ["10x", "0s", "-1s", "s", ""])
def test_parse_interval_refuses(text: str) -> None:
    with pytest.raises(argparse.ArgumentTypeError, match="not an interval"):
        parse_interval(text)


def test_read_deployment_takes_workers_and_concurrency(tmp_path: Path) -> None:
    shipped = read_deployment(REPO / "model/deploy/deployment.yml")
    assert (shipped.max_concurrent_requests_per_instance, shipped.worker_count) == (4, 4)

    bare = tmp_path / "d.yml"
    bare.write_text("request_settings:\n  max_concurrent_requests_per_instance: 2\n")
    assert read_deployment(bare) == AmlDeployment(2, 1, str(bare))

    bare.write_text("instance_count: 2\n")
    with pytest.raises(ValueError, match="max_concurrent_requests_per_instance"):
        read_deployment(bare)


def test_main_plan_without_results_file_notes_defaults(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)  # no bench/results.json, no model/deploy/deployment.yml here

    assert main(PLAN_100K) == 0

    out = capsys.readouterr().out
    assert "Figures (no results file: all defaults)" in out
    assert out.count("[not measured here: default") == len(DEFAULT_FIGURES)
    assert "  readings/s = 100,000 devices / 10 s = 10,000 readings/s\n" in out
    assert "      by readings: 10,000 / (2,000 x 0.7) = 7.14\n" in out
    assert "  Event Hubs: Standard, 24 partitions, 15 TUs\n" in out
    assert (
        "  Binds first: Table Storage account (20,000 entities/s per storage account): "
        "1 account / 1.44 needed = 0.70 x the fleet = 69,651 devices - already past it at "
        "this fleet\n"
    ) in out
    assert "'Scalability and performance targets for Table storage'" in out
    assert "'Quotas and limits' (event-hubs-quotas) and FAQ" in out


def test_main_plan_reads_default_results_and_deployment(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)
    (tmp_path / "bench").mkdir()
    (tmp_path / "bench/results.json").write_text('{"ingest_readings_per_s_b100": 4000}')
    (tmp_path / "model/deploy").mkdir(parents=True)
    (tmp_path / "model/deploy/deployment.yml").write_text(
        'environment_variables:\n  WORKER_COUNT: "2"\nrequest_settings:\n'
        "  max_concurrent_requests_per_instance: 2\n"
    )

    assert main([*PLAN_100K, "--json"]) == 0

    doc = json.loads(capsys.readouterr().out)
    assert doc["results_file"] == "bench/results.json"
    assert doc["figures"]["ingest_readings_per_s_b100"] == {
        "value": 4000.0,
        "unit": "readings/s per ingest instance, 100-reading requests",
        "source": "measured: bench/results.json",
        "measured": True,
    }
    assert doc["aml_deployment"] == {
        "max_concurrent_requests_per_instance": 2,
        "worker_count": 2,
        "source": "model/deploy/deployment.yml",
    }
    assert doc["plan"]["ingest_instances"] == 4  # 10,000 / (4,000 x 0.7) = 3.57


def test_main_plan_json_shape(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
) -> None:
    monkeypatch.chdir(tmp_path)

    assert main([*PLAN_100K, "--headroom", "0.7", "--metrics", "6", "--json"]) == 0

    doc = json.loads(capsys.readouterr().out)
    assert set(doc) == {
        "inputs",
        "results_file",
        "figures",
        "limits",
        "aml_deployment",
        "load",
        "derivation",
        "hops",
        "plan",
        "plan_lines",
        "binds_first",
        "notes",
    }
    assert doc["inputs"] == {
        "devices": 100_000,
        "interval_s": 10.0,
        "readings_per_request": 1,
        "metrics": 6,
        "headroom": 0.7,
        "anomaly_rate": 0.01,
    }
    assert doc["results_file"] is None
    assert doc["plan"]["partitions"] == 24
    assert [h["name"] for h in doc["hops"]] == [
        "Ingest Function (HTTP)",
        "Event Hubs throughput units",
        "Event Hubs partitions",
        "Score Function hosts",
        "AML online endpoint",
        "Table Storage account",
        "Table Storage partition (hottest)",
    ]
    assert set(doc["hops"][0]) == {
        "name",
        "demand",
        "demand_unit",
        "capacity_per_unit",
        "unit",
        "need",
        "units",
        "limit",
        "doc",
        "cap",
        "room",
        "arithmetic",
    }
    assert doc["binds_first"]["hop"] == "Table Storage account"
    assert doc["binds_first"]["devices_at_limit"] == 69_651
    assert doc["limits"]["partitions_per_hub"]["value"] == 32


def test_main_plan_missing_explicit_results_file_is_an_error(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main([*PLAN_100K, "--results", str(tmp_path / "none.json")]) == 2

    assert "error:" in capsys.readouterr().err


def test_main_plan_help_names_every_option(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "--help"])

    assert exit_.value.code == 0
    out = capsys.readouterr().out
    for option in (
        "--devices",
        "--interval",
        "--readings-per-request",
        "--metrics",
        "--headroom",
        "--results",
        "--deployment",
        "--json",
        "10s, 1m, 500ms",
        "not measured here: default",
        "python -m fleetscore plan --devices 100000 --interval 10s",
    ):
        assert option in out


def test_main_plan_bad_interval_is_usage_error(capsys: pytest.CaptureFixture[str]) -> None:
    with pytest.raises(SystemExit) as exit_:
        main(["plan", "--devices", "10", "--interval", "soon"])

    assert exit_.value.code == 2
    assert "not an interval" in capsys.readouterr().err
