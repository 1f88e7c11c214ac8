from __future__ import annotations

import json
import logging
import random
import socket
import time
from collections import Counter, deque
from datetime import UTC, datetime, timedelta

import pytest
import requests
from hypothesis import given, settings
from hypothesis import strategies as st

from shared.errors import ConfigError
from shared.powerbi import (
    POWERBI_SCOPE,
    NullSink,
    PowerBISink,
    PushTarget,
    Sink,
    SinkStats,
    _credential_for,
    entra_token_provider,
    requests_transport,
    sink_from_settings,
)
from shared.predictions import Prediction
from shared.settings import load_settings
from tests.support.powerbi_standin import Limits, PowerBIStandIn, serve
from tests.support.waiting import wait_until

T0 = datetime(2026, 11, 27, 7, 0, 0, tzinfo=UTC)
REST = PushTarget(dataset_id="ds-1", workspace_id="ws-1", api_url="https://pbi.test")


class FakeClock:
    def __init__(self, start: float = 1000.0) -> None:
        self.now = start

    def __call__(self) -> float:
        return self.now

    def advance(self, seconds: float) -> None:
        self.now += seconds


def pred(
    device: str = "pump-0001",
    second: float = 0.0,
    *,
    score: float = 0.1,
    anomaly: bool = False,
    fp: float | None = 0.2,
    due: bool | None = False,
) -> Prediction:
    return Prediction(
        device_id=device,
        timestamp=T0 + timedelta(seconds=second),
        anomaly_score=score,
        is_anomaly=anomaly,
        top_metric="vibration_mm_s" if anomaly else None,
        failure_probability=fp,
        maintenance_due=due,
        model_version="m-1",
    )


def make_sink(clock: FakeClock, transport, target: PushTarget = REST, **options) -> PowerBISink:
    return PowerBISink(
        target,
        transport=transport,
        token_provider=lambda: "token-1",
        clock=clock,
        now=lambda: T0,
        rng=random.Random(7),
        **options,
    )


def run_until(sink: PowerBISink, clock: FakeClock, end: float, max_steps: int = 200_000) -> None:
    """Pump as the background thread would, advancing the fake clock by the asked delay."""
    for _ in range(max_steps):
        if clock.now >= end:
            return
        delay = sink.pump()
        if delay > 0:
            clock.advance(min(delay, end - clock.now))
    raise AssertionError("pump did not reach the end time")


def test_powerbi_sink_delivers_100k_predictions_within_every_limit():
    clock = FakeClock()
    standin = PowerBIStandIn(clock)
    sink = make_sink(clock, standin)
    rng = random.Random(42)
    devices = [f"pump-{i:04d}" for i in range(500)]
    expected_anomalies: Counter[tuple[str, str]] = Counter()
    offered = 0
    # 500 devices × 200 readings, each device every 5 s: a batch of 100 devices every second.
    for step in range(1000):
        batch = []
        for device in devices[(step % 5) * 100 : (step % 5 + 1) * 100]:
            anomaly = rng.random() < 0.01
            batch.append(pred(device, step, score=0.9 if anomaly else 0.1, anomaly=anomaly))
            if anomaly:
                expected_anomalies[(device, batch[-1].timestamp.isoformat())] += 1
        sink.offer(batch)
        offered += len(batch)
        run_until(sink, clock, clock.now + 1.0)
    run_until(sink, clock, clock.now + 2 * 3600.0)

    assert offered == 100_000
    assert standin.violations == []
    assert standin.peak_pending == 1
    anomalies = standin.received["Anomalies"]
    assert len(anomalies) == sum(expected_anomalies.values()) > 500
    got = Counter(
        (r["device_id"], datetime.fromisoformat(str(r["timestamp"])).isoformat()) for r in anomalies
    )
    assert got == expected_anomalies
    aggregates = standin.received["DeviceAggregates"]
    assert sum(int(r["readings"]) for r in aggregates) == 100_000
    assert sum(int(r["anomalies"]) for r in aggregates) == len(anomalies)
    assert {r["device_id"] for r in aggregates} == set(devices)
    stats = sink.stats
    assert stats.rows_dropped == 0
    assert stats.rows_offered == stats.rows_pushed == len(anomalies) + len(aggregates)
    assert stats.throttled == stats.failures == 0
    assert stats.posts == len(standin.post_times)
    per_minute = max(
        sum(1 for t in standin.post_times if s - 60 < t <= s) for s in standin.post_times
    )
    assert per_minute <= 110
    sink.close()
    assert sink.stats == stats


def test_sink_aggregate_row_summarises_one_device_window():
    clock = FakeClock()
    standin = PowerBIStandIn(clock)
    sink = make_sink(clock, standin)
    sink.offer([pred("pump-0001", 0, score=0.2, fp=0.1, due=False)])
    clock.advance(10)
    sink.offer(
        [
            pred("pump-0001", 20, score=0.8, anomaly=True, fp=0.7, due=True),
            pred("pump-0001", 10, score=0.2, fp=0.9, due=False),  # older: not the latest
        ]
    )
    run_until(sink, clock, clock.now + 61)
    assert standin.received["DeviceAggregates"] == [
        {
            "device_id": "pump-0001",
            "window_start": "2026-11-27T07:00:00.000Z",
            "readings": 3,
            "anomalies": 1,
            "mean_anomaly_score": pytest.approx(0.4),
            "max_anomaly_score": 0.8,
            "failure_probability": 0.7,
            "max_failure_probability": 0.9,
            "maintenance_due": True,
            "last_timestamp": "2026-11-27T07:00:20.000Z",
        }
    ]
    assert standin.received["Anomalies"] == [
        {
            "device_id": "pump-0001",
            "timestamp": "2026-11-27T07:00:20.000Z",
            "anomaly_score": 0.8,
            "top_metric": "vibration_mm_s",
            "failure_probability": 0.7,
            "maintenance_due": True,
            "model_version": "m-1",
        }
    ]


def test_sink_waits_for_retry_after_on_429():
    clock = FakeClock()
    standin = PowerBIStandIn(clock)
    standin.scripted.append((429, {"Retry-After": "30"}, b""))
    sink = make_sink(clock, standin)
    sink.offer([pred(anomaly=True, score=0.9)])
    start = clock.now
    assert sink.pump() == 0.0  # the throttled POST
    assert sink.stats.throttled == 1
    run_until(sink, clock, start + 29.9)
    assert len(standin.post_times) == 1
    run_until(sink, clock, start + 31)
    assert standin.post_times[1] >= start + 30
    assert len(standin.received["Anomalies"]) == 1
    assert sink.stats.rows_pushed == 1
    assert sink.stats.rows_dropped == 0


def test_sink_drops_rows_rejected_with_400_and_goes_on(caplog):
    clock = FakeClock()
    standin = PowerBIStandIn(clock)
    standin.scripted.append(
        (400, {}, b'{"error":{"code":"InvalidRequest","message":"column anomaly_score is bad"}}')
    )
    sink = make_sink(clock, standin)
    sink.offer([pred("a", 0, anomaly=True), pred("b", 0, anomaly=True)])
    with caplog.at_level(logging.WARNING, logger="shared.powerbi"):
        sink.pump()
    assert "400" in caplog.text
    assert "column anomaly_score is bad" in caplog.text
    sink.offer([pred("c", 1, anomaly=True)])
    run_until(sink, clock, clock.now + 120)
    assert [r["device_id"] for r in standin.received["Anomalies"]] == ["c"]
    stats = sink.stats
    assert stats.rows_dropped == 2
    assert stats.rows_offered == stats.rows_pushed + stats.rows_dropped


def test_sink_retries_5xx_with_backoff_then_delivers():
    clock = FakeClock()
    standin = PowerBIStandIn(clock)
    for _ in range(3):
        standin.scripted.append((503, {}, b"busy"))
    sink = make_sink(clock, standin, backoff_base=2.0)
    sink.offer([pred(anomaly=True)])
    run_until(sink, clock, clock.now + 120)
    assert len(standin.received["Anomalies"]) == 1
    gaps = [b - a for a, b in zip(standin.post_times, standin.post_times[1:], strict=False)]
    # Equal jitter: the n-th wait lies in [base·2ⁿ/2, base·2ⁿ].
    assert [1 <= gaps[0] <= 2, 2 <= gaps[1] <= 4, 4 <= gaps[2] <= 8] == [True] * 3
    assert sink.stats == SinkStats(
        rows_offered=2, rows_pushed=2, rows_dropped=0, posts=5, throttled=0, failures=3
    )  # the anomaly row (3 failures, 1 success) and then the window's aggregate row


def test_sink_treats_connection_errors_as_transient():
    clock = FakeClock()
    standin = PowerBIStandIn(clock, down=True)
    sink = make_sink(clock, standin)
    sink.offer([pred(anomaly=True)])
    run_until(sink, clock, clock.now + 10)
    assert sink.stats.failures >= 2
    assert sink.pending == 1
    standin.down = False
    run_until(sink, clock, clock.now + 120)
    assert len(standin.received["Anomalies"]) == 1
    assert sink.stats.rows_dropped == 0


def test_offer_never_raises_and_never_does_io():
    calls = []

    def transport(url, body, headers):
        calls.append(url)
        raise AssertionError("offer must not post")

    clock = FakeClock()
    sink = make_sink(clock, transport)
    sink.offer([])
    sink.offer(None)  # type: ignore[arg-type]
    sink.offer(["not a prediction", 42, None])  # type: ignore[list-item]
    sink.offer(5)  # type: ignore[arg-type]
    sink.offer([pred(anomaly=True)] * 1000)
    clock.advance(3600)
    sink.offer([pred(anomaly=True)])  # crosses many windows
    assert calls == []
    assert sink.pending == 1002  # 1,001 anomalies + one aggregate row


def test_overflow_drops_beyond_the_cap_and_counts_them():
    clock = FakeClock()
    standin = PowerBIStandIn(clock, down=True)
    sink = make_sink(clock, standin, max_queued_rows=1000)
    for second in range(30):
        sink.offer([pred(f"d{i}", second, anomaly=True) for i in range(100)])
        run_until(sink, clock, clock.now + 1)
        assert sink.pending <= 1000
    stats = sink.stats
    assert stats.rows_offered == 3000
    assert stats.rows_dropped == 2000
    standin.down = False
    run_until(sink, clock, clock.now + 600)
    # The newest 1,000 anomaly rows survived: eviction takes the oldest first.
    assert len(standin.received["Anomalies"]) == 1000
    assert {r["timestamp"] for r in standin.received["Anomalies"]} == {
        f"2026-11-27T07:00:{s:02d}.000Z" for s in range(20, 30)
    }
    sink.close()
    stats = sink.stats
    assert stats.rows_offered == stats.rows_pushed + stats.rows_dropped


def test_overflow_evicts_aggregate_rows_before_anomaly_rows():
    clock = FakeClock()
    standin = PowerBIStandIn(clock, down=True)
    sink = make_sink(clock, standin, max_queued_rows=10)
    sink.offer([pred(f"d{i}", 0) for i in range(8)])
    run_until(sink, clock, clock.now + 61)  # 8 aggregate rows queued
    sink.offer([pred(f"d{i}", 61, anomaly=True) for i in range(6)])
    assert sink.pending == 10
    assert sink.stats.rows_dropped == 4
    standin.down = False
    run_until(sink, clock, clock.now + 200)
    assert len(standin.received["Anomalies"]) == 6
    first_window = [
        r
        for r in standin.received["DeviceAggregates"]
        if r["window_start"] == "2026-11-27T07:00:00.000Z"
    ]
    assert [r["device_id"] for r in first_window] == ["d4", "d5", "d6", "d7"]


def test_sink_drops_rows_older_than_max_age():
    clock = FakeClock()
    standin = PowerBIStandIn(clock, down=True)
    sink = make_sink(clock, standin, max_row_age_seconds=30)
    sink.offer([pred(anomaly=True)])
    run_until(sink, clock, clock.now + 50)
    assert sink.pending == 0
    assert sink.stats.rows_dropped == 1


def test_sink_paces_rows_per_hour():
    clock = FakeClock()
    standin = PowerBIStandIn(clock, limits=Limits(rows_per_hour=5000))
    sink = make_sink(
        clock,
        standin,
        max_rows_per_post=1000,
        rows_per_hour=4000,
        max_row_age_seconds=6 * 3600,
    )
    sink.offer([pred(f"d{i % 50}", i, anomaly=True) for i in range(12_000)])
    run_until(sink, clock, clock.now + 3 * 3600 + 120)
    assert standin.violations == []
    assert len(standin.received["Anomalies"]) == 12_000
    assert max(n for _, n in standin.row_log) == 1000


def test_standin_enforces_documented_limits():
    clock = FakeClock()
    url = "https://pbi.test/v1.0/myorg/datasets/ds-1/tables/Anomalies/rows"
    auth = {"Authorization": "Bearer token-1"}
    too_many = json.dumps({"rows": [{"a": 1}] * 10_001}).encode()
    status, _, body = PowerBIStandIn(clock)(url, too_many, auth)
    assert (status, json.loads(body)["error"]["code"]) == (400, "InvalidRequest")
    standin = PowerBIStandIn(clock)
    one = json.dumps({"rows": [{"a": 1}]}).encode()
    statuses = [standin(url, one, auth)[0] for _ in range(120)]
    assert set(statuses) == {200}
    status, headers, _ = standin(url, one, auth)
    assert (status, headers["Retry-After"]) == (429, "60")
    assert standin(url, one, {})[0] == 401
    assert standin(url, one, {"Authorization": "Bearer nope"})[0] == 403
    assert standin.violations == ["more than 120 POST rows requests in a minute"]

    big = PowerBIStandIn(clock, retention="None", limits=Limits(rows_per_post=300_000))
    big(url, json.dumps({"rows": [{"a": 1}] * 250_000}).encode(), auth)
    clock.advance(3600)
    statuses = []
    for _ in range(121):
        statuses.append(big(url, one, auth)[0])
        clock.advance(1.0)
    assert statuses == [200] * 120 + [429]
    assert big.violations == ["more than 120 POSTs in an hour on a 250,000-row table"]

    fifo = PowerBIStandIn(clock, limits=Limits(rows_per_post=300_000))
    fifo(url, json.dumps({"rows": [{"a": 1}] * 250_000}).encode(), auth)
    assert len(fifo.stored["Anomalies"]) == 200_000


def test_push_target_builds_urls_and_hides_keys():
    assert REST.url_for("aggregates") == (
        "https://pbi.test/v1.0/myorg/groups/ws-1/datasets/ds-1/tables/DeviceAggregates/rows"
    )
    assert PushTarget(dataset_id="ds 2", anomalies_table="My Anomalies").url_for("anomalies") == (
        "https://api.powerbi.com/v1.0/myorg/datasets/ds%202/tables/My%20Anomalies/rows"
    )
    push = PushTarget(aggregates_url="https://pbi.test/beta/t/datasets/d/rows?key=s3cret")
    assert push.url_for("anomalies") is None
    assert not push.uses_rest
    assert "s3cret" not in repr(push)
    with pytest.raises(ConfigError) as both:
        PushTarget(dataset_id="x", anomalies_url="https://pbi.test/x?key=zz-secret")
    assert both.value.setting == "POWERBI_DATASET_ID"
    assert "zz-secret" not in str(both.value)
    with pytest.raises(ConfigError):
        PushTarget()
    with pytest.raises(ConfigError):
        PowerBISink(REST, transport=lambda u, b, h: (200, {}, b""))  # no token provider
    with pytest.raises(ConfigError):
        make_sink(FakeClock(), lambda u, b, h: (200, {}, b""), posts_per_minute=120)


def test_sinks_follow_the_protocol():
    sinks: list[Sink] = [NullSink(), make_sink(FakeClock(), lambda u, b, h: (200, {}, b""))]
    for sink in sinks:
        sink.offer([pred()])
        sink.close(timeout=1.0)
    assert SinkStats() == SinkStats(0, 0, 0, 0, 0, 0)


def test_entra_token_provider_caches_until_five_minutes_before_expiry():
    class Token:
        def __init__(self, token: str, expires_on: int) -> None:
            self.token, self.expires_on = token, expires_on

    class Credential:
        def __init__(self) -> None:
            self.scopes: list[tuple[str, ...]] = []

        def get_token(self, *scopes: str, **kwargs: object) -> Token:
            self.scopes.append(scopes)
            return Token(f"t{len(self.scopes)}", 10_000)

    now = [5000.0]
    credential = Credential()
    provide = entra_token_provider(credential, now=lambda: now[0])  # type: ignore[arg-type]
    assert [provide(), provide()] == ["t1", "t1"]
    now[0] = 10_000 - 301
    assert provide() == "t1"
    now[0] = 10_000 - 300
    assert provide() == "t2"
    assert credential.scopes == [(POWERBI_SCOPE,), (POWERBI_SCOPE,)]


def wait_for(condition, deadline_seconds: float = 10.0) -> None:
    assert wait_until(condition, timeout=deadline_seconds), "condition not met before the deadline"


def test_sink_posts_over_real_http_with_a_bearer_token():
    standin = PowerBIStandIn(time.monotonic)
    with serve(standin) as base, requests.Session() as session:
        target = PushTarget(dataset_id="ds-1", api_url=base)
        sink = PowerBISink(
            target,
            transport=requests_transport(session, timeout=5.0),
            token_provider=lambda: "token-1",
            interval_seconds=0.2,
        )
        sink.start()
        try:
            sink.offer([pred(f"d{i}", i, anomaly=i % 2 == 0) for i in range(10)])
            wait_for(
                lambda: (
                    len(standin.received["Anomalies"]) == 5
                    and len(standin.received["DeviceAggregates"]) == 10
                )
            )
        finally:
            sink.close(timeout=5.0)
    stats = sink.stats
    assert (stats.rows_offered, stats.rows_pushed, stats.rows_dropped) == (15, 15, 0)
    assert standin.violations == []


def test_sink_push_url_over_real_http_never_logs_the_key(caplog):
    caplog.set_level(logging.DEBUG, logger="shared.powerbi")
    caplog.set_level(logging.INFO)
    standin = PowerBIStandIn(
        time.monotonic, push_key="s3cret-key", push_tables={"ds-9": "Anomalies"}
    )
    scripted: deque[tuple[int, dict[str, str], bytes]] = standin.scripted
    scripted.append((500, {}, b"oops"))
    with serve(standin) as base, requests.Session() as session:
        good = f"{base}/beta/tenant-1/datasets/ds-9/rows?key=s3cret-key"
        bad = PowerBISink(
            PushTarget(anomalies_url=f"{base}/beta/tenant-1/datasets/ds-9/rows?key=bad-key-xyz"),
            transport=requests_transport(session, timeout=5.0),
        )
        bad.offer([pred(anomaly=True)])
        bad.pump()  # answered 403: kept for a retry, not dropped
        assert (bad.stats.failures, bad.pending) == (1, 1)
        bad.close(timeout=0.1)

        with socket.socket() as probe:  # a port with nobody listening: connection refused
            probe.bind(("127.0.0.1", 0))
            dead_port = probe.getsockname()[1]
        dead = PowerBISink(
            PushTarget(
                anomalies_url=f"http://127.0.0.1:{dead_port}/beta/t/datasets/d/rows?key=s3cret-key"
            ),
            transport=requests_transport(session, timeout=5.0),
        )
        dead.offer([pred(anomaly=True)])
        dead.pump()
        assert (dead.stats.failures, dead.pending) == (1, 1)
        assert "ConnectionError" in caplog.text
        dead.close(timeout=0.1)

        sink = PowerBISink(
            PushTarget(anomalies_url=good),
            transport=requests_transport(session, timeout=5.0),
            backoff_base=0.05,
        )
        sink.start()
        try:
            sink.offer([pred(f"d{i}", i, anomaly=True) for i in range(3)])
            wait_for(lambda: len(standin.received["Anomalies"]) == 3)
        finally:
            sink.close(timeout=5.0)
    assert sink.stats.failures == 1  # the scripted 500, retried
    assert caplog.records, "expected the sink to log its pause and drops"
    for record in caplog.records:
        assert "s3cret-key" not in record.getMessage()
        assert "bad-key-xyz" not in record.getMessage()


def test_sink_request_shapes_for_rest_and_push_urls():
    sent: list[tuple[str, object, dict[str, str]]] = []

    def transport(url, body, headers):
        sent.append((url, json.loads(body), headers))
        return 200, {}, b""

    clock = FakeClock()
    rest = make_sink(clock, transport)
    rest.offer([pred(anomaly=True)])
    rest.pump()
    url, body, headers = sent.pop()
    assert url == "https://pbi.test/v1.0/myorg/groups/ws-1/datasets/ds-1/tables/Anomalies/rows"
    assert isinstance(body, dict)
    assert [r["device_id"] for r in body["rows"]] == ["pump-0001"]
    assert headers == {"Content-Type": "application/json", "Authorization": "Bearer token-1"}

    push_url = "https://pbi.test/beta/t/datasets/d/rows?key=k"
    push = make_sink(clock, transport, PushTarget(aggregates_url=push_url))
    push.offer([pred(anomaly=True), pred(second=1)])
    assert push.pending == 0  # no anomalies URL: anomaly rows are not kept
    run_until(push, clock, clock.now + 61)
    url, body, headers = sent.pop()
    assert (url, headers) == (push_url, {"Content-Type": "application/json"})
    assert isinstance(body, list)
    assert [(r["device_id"], r["readings"]) for r in body] == [("pump-0001", 2)]
    assert sent == []


@settings(max_examples=60, deadline=None, database=None)
@given(
    script=st.lists(st.sampled_from([200, 200, 400, 429, 503, 0]), max_size=40),
    offers=st.lists(st.integers(min_value=0, max_value=60), min_size=1, max_size=30),
    cap=st.integers(min_value=1, max_value=80),
)
def test_sink_accounts_for_every_row(script, offers, cap):
    replies = deque(script)

    def transport(url, body, headers):
        status = replies.popleft() if replies else 200
        if status == 0:
            raise requests.ConnectionError("down")
        return status, {"Retry-After": "5"} if status == 429 else {}, b""

    clock = FakeClock()
    sink = make_sink(clock, transport, max_queued_rows=cap, max_row_age_seconds=200)
    for step, size in enumerate(offers):
        sink.offer([pred(f"d{i % 7}", step, anomaly=i % 3 == 0) for i in range(size)])
        run_until(sink, clock, clock.now + 20)
        assert sink.pending <= cap
    sink.close()
    stats = sink.stats
    assert sink.pending == 0
    assert stats.rows_offered == stats.rows_pushed + stats.rows_dropped
    assert stats.posts >= stats.throttled + stats.failures


def settings_env(**powerbi: str) -> dict[str, str]:
    return {
        "EVENTHUB_CONNECTION": "Endpoint=sb://localhost/;SharedAccessKeyName=k;SharedAccessKey=v",
        "TABLES_CONNECTION": "AccountName=devstoreaccount1;AccountKey=a2V5",
        "AML_ENDPOINT_URL": "http://127.0.0.1:5001/score",
        "AML_ENDPOINT_KEY": "aml-key",
        **powerbi,
    }


def test_sink_from_settings_posts_with_the_credentials_token():
    class Credential:
        def get_token(self, *scopes: str, **kwargs: object):
            return type("Token", (), {"token": "from-entra", "expires_on": 2**40})()

    sent = []

    def transport(url, body, headers):
        sent.append((url, headers["Authorization"]))
        return 200, {}, b""

    ws, ds = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
    settings = load_settings(
        settings_env(POWERBI_WORKSPACE_ID=ws, POWERBI_DATASET_ID=ds, POWERBI_INTERVAL_SECONDS="30")
    )
    sink = sink_from_settings(settings, transport=transport, credential=Credential(), start=False)
    sink.offer([pred(anomaly=True)])
    sink.pump()
    sink.close()
    assert sent[0] == (
        f"https://api.powerbi.com/v1.0/myorg/groups/{ws}/datasets/{ds}/tables/Anomalies/rows",
        "Bearer from-entra",
    )


def test_sink_from_settings_sends_aggregates_only_to_a_push_url():
    url = "https://pbi.test/beta/t/datasets/d/rows?key=k"
    settings = load_settings(settings_env(POWERBI_PUSH_URL=url))
    sink = sink_from_settings(settings, transport=lambda u, b, h: (200, {}, b""), start=False)
    sink.offer([pred(anomaly=True)])
    assert sink.pending == 0  # anomaly rows need the REST API
    sink.close()
    assert sink.stats.rows_offered == sink.stats.rows_dropped == 1  # the unsent aggregate row


def test_credential_for_settings_picks_service_principal_or_managed_identity():
    from azure.identity import ClientSecretCredential, DefaultAzureCredential

    tenant, client = "11111111-2222-3333-4444-555555555555", "66666666-7777-8888-9999-000000000000"
    ds = {"POWERBI_DATASET_ID": tenant}
    principal = load_settings(
        settings_env(
            **ds, POWERBI_TENANT_ID=tenant, POWERBI_CLIENT_ID=client, POWERBI_CLIENT_SECRET="s"
        )
    )
    assert isinstance(_credential_for(principal), ClientSecretCredential)
    assert isinstance(_credential_for(load_settings(settings_env(**ds))), DefaultAzureCredential)
    half = load_settings(settings_env(**ds, POWERBI_CLIENT_SECRET="s"))
    with pytest.raises(ConfigError) as missing:
        _credential_for(half)
    assert missing.value.setting == "POWERBI_TENANT_ID"


def test_sink_from_settings_takes_a_share_of_the_dataset_limits_per_writer():
    settings = load_settings(
        settings_env(
            POWERBI_PUSH_URL="https://pbi.test/beta/t/datasets/d/rows?key=k", POWERBI_WRITERS="4"
        )
    )
    sink = sink_from_settings(settings, transport=lambda u, b, h: (200, {}, b""), start=False)
    try:
        assert sink._posts.rate * 60 == pytest.approx(25.0)
        assert sink._rows.rate * 3600 == pytest.approx(225_000.0)
    finally:
        sink.close()


def test_sink_from_settings_uses_a_fixed_token_only_for_a_local_stand_in():
    sent = []

    def transport(url, body, headers):
        sent.append((url, headers["Authorization"]))
        return 200, {}, b""

    class NoEntra:
        def get_token(self, *scopes: str, **kwargs: object):
            raise AssertionError("a fixed token must not ask Entra ID")

    ds = "66666666-7777-8888-9999-000000000000"
    local = settings_env(
        POWERBI_API_URL="http://127.0.0.1:7000",
        POWERBI_DATASET_ID=ds,
        POWERBI_ACCESS_TOKEN="dashboard-key",
    )
    settings = load_settings(local)
    assert "dashboard-key" not in repr(settings)
    sink = sink_from_settings(settings, transport=transport, credential=NoEntra(), start=False)
    sink.offer([pred(anomaly=True)])
    sink.pump()
    sink.close()
    assert sent[0] == (
        f"http://127.0.0.1:7000/v1.0/myorg/datasets/{ds}/tables/Anomalies/rows",
        "Bearer dashboard-key",
    )
    with pytest.raises(ConfigError) as refused:
        load_settings({**local, "POWERBI_API_URL": "https://api.powerbi.com"})
    assert refused.value.setting == "POWERBI_ACCESS_TOKEN"
    assert "dashboard-key" not in str(refused.value)
