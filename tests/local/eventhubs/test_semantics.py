from __future__ import annotations

import random
import string

import pytest
from azure.eventhub._buffered_producer._partition_resolver import PartitionResolver

from local.eventhubs.semantics import (
    Address,
    EmulatorError,
    Ownership,
    StartPosition,
    parse_address,
    parse_selector,
    partition_for_key,
    sign_sas,
    verify_sas_token,
)


@pytest.mark.parametrize(
    ("address", "parsed"),
    [
        ("amqps://localhost/readings", Address("readings")),
        ("amqps://localhost/readings/Partitions/3", Address("readings", "3")),
        (
            "amqps://localhost/readings/ConsumerGroups/$Default/Partitions/0",
            Address("readings", "0", "$Default"),
        ),
        (
            "amqp://127.0.0.1:5672/readings/consumergroups/scoring/partitions/1",
            Address("readings", "1", "scoring"),
        ),
        ("readings", Address("readings")),
    ],
)
def test_parse_address_shapes(address, parsed):
    assert parse_address(address) == parsed


def test_parse_address_refuses_other_shapes():
    with pytest.raises(EmulatorError) as info:
        parse_address("amqps://localhost/readings/Subscriptions/x")
    assert info.value.condition == "amqp:not-found"


@pytest.mark.parametrize(
    ("selector", "position"),
    [
        (None, StartPosition("earliest")),
        ("amqp.annotation.x-opt-offset > '-1'", StartPosition("earliest")),
        ("amqp.annotation.x-opt-offset > '@latest'", StartPosition("latest")),
        ("amqp.annotation.x-opt-offset >= '4096'", StartPosition("offset", 4096, True)),
        ("amqp.annotation.x-opt-offset > '4096'", StartPosition("offset", 4096, False)),
        ("amqp.annotation.x-opt-sequence-number > '41'", StartPosition("sequence", 41, False)),
        (
            "amqp.annotation.x-opt-enqueued-time >= '1764226800000'",
            StartPosition("time", 1764226800000, True),
        ),
    ],
)
def test_parse_selector_reads_what_the_sdk_writes(selector, position):
    assert parse_selector(selector) == position


@pytest.mark.parametrize(
    "selector", ["x-opt-offset > 1", "amqp.annotation.x-opt-offset > 'abc'", ""]
)
def test_parse_selector_refuses_garbage(selector):
    with pytest.raises(EmulatorError) as info:
        parse_selector(selector)
    assert info.value.condition == "amqp:invalid-field"


def test_sas_token_round_trip_and_refusals():
    token = sign_sas("sb://localhost/readings", "RootManageSharedAccessKey", "SAS_KEY_VALUE", 2_000)
    assert verify_sas_token(
        token, key_name="RootManageSharedAccessKey", key="SAS_KEY_VALUE", now=1_000
    ) == ("sb://localhost/readings")
    cases = {
        "wrong key": dict(key_name="RootManageSharedAccessKey", key="other", now=1_000),
        "wrong name": dict(key_name="Other", key="SAS_KEY_VALUE", now=1_000),
        "expired": dict(key_name="RootManageSharedAccessKey", key="SAS_KEY_VALUE", now=3_000),
    }
    for case, kwargs in cases.items():
        with pytest.raises(EmulatorError) as info:
            verify_sas_token(token, **kwargs)
        assert info.value.condition == "amqp:unauthorized-access", case
        assert "SAS_KEY_VALUE" not in info.value.description


def test_sas_token_made_by_the_sdk_verifies():
    from azure.eventhub._pyamqp.utils import generate_sas_token

    token = generate_sas_token(
        "sb://localhost:5672/readings", "RootManageSharedAccessKey", "SAS_KEY_VALUE", 2_000_000_000
    )
    assert verify_sas_token(
        token, key_name="RootManageSharedAccessKey", key="SAS_KEY_VALUE", now=1_000
    ) == ("sb://localhost:5672/readings")


def test_partition_for_key_matches_the_sdk_resolver():
    rng = random.Random(7)
    for count in (1, 2, 4, 8, 32):
        ids = [str(i) for i in range(count)]
        resolver = PartitionResolver(ids)
        for _ in range(300):
            key = "".join(
                rng.choice(string.ascii_letters + string.digits + "-_.")
                for _ in range(rng.randint(1, 40))
            )
            assert partition_for_key(key, ids) == resolver.get_partition_id_by_partition_key(key), (
                key
            )


def test_partition_for_key_spreads_device_ids():
    ids = [str(i) for i in range(4)]
    counts = {p: 0 for p in ids}
    for n in range(400):
        counts[partition_for_key(f"pump-{n:04d}", ids)] += 1
    assert min(counts.values()) > 50


def test_ownership_epoch_rules():
    own = Ownership()
    key = ("readings", "$default", "0")
    assert own.claim(key, 1, None) == []
    assert own.claim(key, 2, None) == []
    assert own.claim(key, 3, 0) == [1, 2]  # an epoch receiver steals from non-epoch ones
    assert own.claim(key, 4, 0) == [3]  # an equal epoch takes over (the event processor's way)
    with pytest.raises(EmulatorError) as info:
        own.claim(key, 5, None)
    assert info.value.condition == "com.microsoft:receiver-disconnected"
    assert own.claim(key, 6, 5) == [4]
    with pytest.raises(EmulatorError):
        own.claim(key, 7, 4)
    own.release(key, 6)
    assert own.claim(key, 8, None) == []


def test_ownership_caps_receivers_without_epoch():
    own = Ownership()
    key = ("readings", "$default", "1")
    for link in range(5):
        own.claim(key, link, None)
    with pytest.raises(EmulatorError) as info:
        own.claim(key, 9, None)
    assert info.value.condition == "com.microsoft:quota-exceeded"
