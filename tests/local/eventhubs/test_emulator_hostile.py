"""Traffic the SDK never sends: malformed messages, reused channels and handles, stray frames."""

from __future__ import annotations

from pathlib import Path

import pytest
from azure.eventhub import EventData, EventHubProducerClient

from local.eventhubs.amqp.message import (
    BATCH_MESSAGE_FORMAT,
    AmqpValue,
    Message,
    Properties,
    decode_message,
    encode_message,
)
from local.eventhubs.amqp.performatives import (
    Begin,
    Close,
    Detach,
    Disposition,
    Flow,
    Rejected,
    Transfer,
)
from local.eventhubs.amqp.types import UInt
from local.eventhubs.runner import EmulatorThread
from tests.local.eventhubs.raw_client import RawClient
from tests.support.waiting import wait_until

AUDIENCE = "sb://127.0.0.1/readings"

pytestmark = pytest.mark.stack


@pytest.fixture
def hubs(tmp_path: Path):
    with EmulatorThread(tmp_path / "eventhubs") as emulator:
        yield emulator


@pytest.fixture
def raw(hubs):
    client = RawClient(hubs.port)
    client.begin()
    yield client
    client.close()


def publish(
    raw: RawClient, handle: int, payload: bytes, delivery_id: int, fmt: int = 0
) -> Disposition:
    raw.transfer(0, handle, delivery_id, payload, fmt=fmt)
    return raw.wait_for(
        lambda f: isinstance(f.body, Disposition) and int(f.body.first) == delivery_id
    ).body


def empty(hubs: EmulatorThread, partition: str) -> bool:
    with EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="readings"
    ) as c:
        return c.get_partition_properties(partition)["is_empty"]


def test_a_batch_with_an_undecodable_event_is_rejected_and_nothing_is_stored(hubs, raw):
    assert raw.authorize(AUDIENCE) == 202
    raw.attach(0, 1, "producer", sender=True, address="amqps://localhost/readings/Partitions/0")
    raw.wait_for(lambda f: isinstance(f.body, Flow) and f.body.handle is not None)
    good = encode_message(Message(body=[b"fine"]))
    batch = encode_message(Message(body=[good, b"\xff\xff not an AMQP message"]))
    outcome = publish(raw, 1, batch, 1, fmt=BATCH_MESSAGE_FORMAT)
    assert isinstance(outcome.state, Rejected)
    assert str(outcome.state.error.condition) == "amqp:decode-error"
    assert empty(hubs, "0")
    # the connection and link stay usable
    ok = publish(raw, 1, encode_message(Message(body=[good, good])), 2, fmt=BATCH_MESSAGE_FORMAT)
    assert not isinstance(ok.state, Rejected)
    assert not empty(hubs, "0")


def test_a_partition_key_over_128_characters_is_rejected(hubs, raw):
    assert raw.authorize(AUDIENCE) == 202
    raw.attach(0, 1, "producer", sender=True, address="amqps://localhost/readings")
    event = encode_message(
        Message(message_annotations={"x-opt-partition-key": "k" * 129}, body=[b"x"])
    )
    outcome = publish(raw, 1, event, 1)
    assert isinstance(outcome.state, Rejected)
    assert "at most 128" in outcome.state.error.description


def test_publishing_needs_a_token_for_that_hub(hubs, raw):
    assert raw.authorize("sb://127.0.0.1/predictions") == 202
    answer = raw.attach(0, 1, "producer", sender=True, address="amqps://localhost/readings")
    detach = raw.wait_for(lambda f: isinstance(f.body, Detach)).body
    assert answer.name == "producer"
    assert str(detach.error.condition) == "amqp:unauthorized-access"


def test_a_namespace_token_covers_every_hub(hubs, raw):
    assert raw.authorize("sb://127.0.0.1/") == 202
    raw.attach(0, 1, "producer", sender=True, address="amqps://localhost/predictions")
    flow = raw.wait_for(lambda f: isinstance(f.body, (Flow, Detach)))
    assert isinstance(flow.body, Flow)


def test_a_wrong_key_gets_401_from_cbs(hubs, raw):
    assert raw.authorize(AUDIENCE, key="guess") == 401


def test_a_reused_channel_releases_the_partition_it_held(hubs, raw):
    assert raw.authorize(AUDIENCE) == 202
    raw.attach(
        0,
        5,
        "reader",
        sender=False,
        address="amqps://localhost/readings/ConsumerGroups/$Default/Partitions/1",
        properties={"com.microsoft:epoch": 7},
    )
    assert hubs.receiver_count("readings", "1") == 1
    raw.send(0, Begin(next_outgoing_id=UInt(0), incoming_window=UInt(10), outgoing_window=UInt(10)))
    raw.wait_for(lambda f: isinstance(f.body, Begin))
    assert wait_until(lambda: hubs.receiver_count("readings", "1") == 0, timeout=5)


def test_closing_the_socket_releases_what_the_connection_held(hubs, raw):
    assert raw.authorize(AUDIENCE) == 202
    raw.attach(
        0,
        5,
        "reader",
        sender=False,
        address="amqps://localhost/readings/ConsumerGroups/$Default/Partitions/2",
        properties={"com.microsoft:epoch": 7},
    )
    assert hubs.receiver_count("readings", "2") == 1
    raw.close()
    assert wait_until(lambda: hubs.receiver_count("readings", "2") == 0, timeout=5)


def test_a_frame_on_a_channel_without_begin_closes_only_that_connection(hubs, raw):
    raw.send(
        7, Transfer(handle=UInt(0), delivery_id=UInt(0), delivery_tag=b"\x00", settled=True), b"x"
    )
    close = raw.wait_for(lambda f: isinstance(f.body, Close)).body
    assert str(close.error.condition) == "amqp:connection:framing-error"
    with EventHubProducerClient.from_connection_string(
        hubs.connection_string(), eventhub_name="readings"
    ) as c:
        c.send_batch([EventData("after")], partition_id="3")
        assert c.get_partition_properties("3")["last_enqueued_sequence_number"] == 0


def test_management_answers_only_for_the_tokens_hub(hubs, raw):
    assert raw.authorize("sb://127.0.0.1/predictions") == 202
    raw.attach(0, 10, "mgmt-out", sender=True, address="$management")
    answer = raw.attach(
        0, 11, "mgmt-in", sender=False, address="$management", target_address="mgmt-reply"
    )
    raw.send(
        0,
        Flow(
            next_incoming_id=UInt(0),
            incoming_window=UInt(65536),
            next_outgoing_id=UInt(0),
            outgoing_window=UInt(65536),
            handle=UInt(11),
            delivery_count=UInt(0),
            link_credit=UInt(5),
        ),
    )
    request = Message(
        properties=Properties(message_id="m-1", reply_to="mgmt-reply"),
        application_properties={
            "operation": "READ",
            "name": "readings",
            "type": "com.microsoft:eventhub",
        },
        body=AmqpValue(None),
    )
    raw.transfer(0, 10, 1, encode_message(request))
    reply = raw.wait_for(
        lambda f: isinstance(f.body, Transfer) and int(f.body.handle) == int(answer.handle)
    )
    assert decode_message(reply.payload).application_properties["status-code"] == 401
