from __future__ import annotations

import json
import random
import socket
import threading

import pytest

from shared.errors import PermanentError, TransientError
from shared.scoring import (
    AdaptiveLimit,
    AmlClient,
    EndpointConfigError,
    RetryPolicy,
    call_with_retry,
    parse_retry_after,
)
from tests.support.aml_standin import KEY

BODY = json.dumps(
    {
        "contract": 1,
        "devices": [
            {
                "device_id": "a",
                "state": None,
                "readings": [{"timestamp": "2026-11-27T06:59:00.000Z", "metrics": {"rpm": 150.0}}],
            }
        ],
    }
).encode()


def test_aml_client_scores_and_sends_the_key(aml):
    client = AmlClient(aml.url, KEY, deployment="blue")
    try:
        doc = client.score(BODY)
    finally:
        client.close()
    assert doc["model_version"] == "toy-1"
    assert doc["devices"][0]["predictions"][0]["is_anomaly"] is True


@pytest.mark.parametrize(
    ("fault", "kind", "retry_after"),
    [
        ((429, {"Retry-After": "7"}, b"busy"), TransientError, 7.0),
        ((503, {}, b"down"), TransientError, None),
        ((408, {}, b"slow"), TransientError, None),
        (
            (424, {"ms-azureml-model-error-statuscode": "502"}, b"model crashed"),
            TransientError,
            None,
        ),
        (
            (424, {"ms-azureml-model-error-statuscode": "400"}, b"model said no"),
            PermanentError,
            None,
        ),
        ((400, {}, b"bad"), PermanentError, None),
        ((200, {}, b"not json"), PermanentError, None),
        # NaN is Python's json extension, not JSON: a model that answers it is refused whole.
        ((200, {}, b'{"model_version": "x", "devices": [], "score": NaN}'), PermanentError, None),
        ((401, {}, b"who"), EndpointConfigError, None),
        ((404, {}, b"where"), EndpointConfigError, None),
    ],
)
def test_aml_client_classifies_answers(aml, fault, kind, retry_after):
    aml.script.faults.append(fault)
    client = AmlClient(aml.url, KEY)
    try:
        with pytest.raises(kind) as info:
            client.score(BODY)
    finally:
        client.close()
    if kind is TransientError:
        assert info.value.retry_after == retry_after


def test_aml_client_wrong_key_is_a_config_error(aml):
    client = AmlClient(aml.url, "wrong")
    try:
        with pytest.raises(EndpointConfigError) as info:
            client.score(BODY)
    finally:
        client.close()
    assert info.value.status == 401


def test_aml_client_connection_refused_is_transient():
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = s.getsockname()[1]
    client = AmlClient(f"http://127.0.0.1:{port}/score", KEY)
    with pytest.raises(TransientError):
        client.score(BODY)
    client.close()


class FakeClock:
    def __init__(self) -> None:
        self.t = 0.0
        self.sleeps: list[float] = []

    def __call__(self) -> float:
        return self.t

    def sleep(self, seconds: float) -> None:
        self.sleeps.append(seconds)
        self.t += seconds


def test_call_with_retry_honours_retry_after_on_429(aml):
    aml.script.faults += [(429, {"Retry-After": "3"}, b""), (429, {"Retry-After": "3"}, b"")]
    clock = FakeClock()
    client = AmlClient(aml.url, KEY)
    limit = AdaptiveLimit(4)
    doc = call_with_retry(
        client,
        BODY,
        limit=limit,
        policy=RetryPolicy(),
        deadline=60,
        clock=clock,
        sleep=clock.sleep,
        rng=random.Random(1),
    )
    client.close()
    assert doc["model_version"] == "toy-1"
    assert aml.record.statuses == [429, 429, 200]
    assert len(clock.sleeps) == 2
    assert all(3.0 <= s <= 3.3 for s in clock.sleeps)
    assert limit.limit == 2  # halved twice on 429 (4 -> 2 -> 1), then +1 after a success


def test_call_with_retry_gives_up_at_the_deadline(aml):
    aml.script.faults += [(503, {}, b"")] * 50
    clock = FakeClock()
    client = AmlClient(aml.url, KEY)
    with pytest.raises(TransientError, match="gave up"):
        call_with_retry(
            client,
            BODY,
            limit=AdaptiveLimit(2),
            policy=RetryPolicy(base=1, cap=8),
            deadline=20,
            clock=clock,
            sleep=clock.sleep,
            rng=random.Random(2),
        )
    client.close()
    assert clock.t <= 20
    assert 2 <= len(aml.record.statuses) < 50
    assert set(aml.record.statuses) == {503}


def test_call_with_retry_does_not_retry_permanent_errors(aml):
    aml.script.faults.append((400, {}, b"no"))
    client = AmlClient(aml.url, KEY)
    with pytest.raises(PermanentError):
        call_with_retry(client, BODY, limit=AdaptiveLimit(1), policy=RetryPolicy(), deadline=60)
    client.close()
    assert aml.record.statuses == [400]


def test_retry_policy_backoff_is_capped_and_jittered():
    rng = random.Random(3)
    policy = RetryPolicy(base=0.5, cap=4)
    delays = [policy.delay(a, rng) for a in range(10)]
    assert all(0 <= d <= 4 for d in delays)
    assert len(set(delays)) == 10


def test_adaptive_limit_halves_on_throttle_and_grows_slowly():
    limit = AdaptiveLimit(8)
    limit.acquire()
    limit.release(throttled=True)
    assert limit.limit == 4
    for _ in range(4):
        limit.acquire()
        limit.release()
    assert limit.limit == 5
    for _ in range(100):
        limit.acquire()
        limit.release()
    assert limit.limit == 8


def test_adaptive_limit_blocks_beyond_the_limit():
    limit = AdaptiveLimit(1)
    limit.acquire()
    entered = threading.Event()

    def second() -> None:
        limit.acquire()
        entered.set()
        limit.release()

    t = threading.Thread(target=second)
    t.start()
    assert not entered.wait(0.2)
    limit.release()
    assert entered.wait(5)
    t.join(5)


@pytest.mark.parametrize(
    ("raw", "seconds"), [("5", 5.0), (" 0.5 ", 0.5), ("soon", None), (None, None), ("-1", None)]
)
def test_parse_retry_after(raw, seconds):
    assert parse_retry_after(raw) == seconds


def test_adaptive_limit_cuts_once_for_simultaneous_throttles():
    limit = AdaptiveLimit(8)
    tickets = [limit.acquire() for _ in range(4)]  # four requests in flight together
    for ticket in tickets:
        limit.release(ticket, throttled=True)  # all four answered 429
    assert limit.limit == 4
    later = limit.acquire()  # sent after the cut: its 429 is news
    limit.release(later, throttled=True)
    assert limit.limit == 2


def test_parse_retry_after_in_milliseconds_and_implausible_values():
    from shared.retry import parse_retry_after as parse

    assert parse("1500", scale=0.001) == 1.5
    assert parse("7200") is None
    assert parse("nan") is None
