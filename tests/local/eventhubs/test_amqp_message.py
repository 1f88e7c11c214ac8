import contextlib
import uuid
from typing import Any

import pytest
from azure.eventhub import EventData, EventDataBatch
from azure.eventhub._pyamqp import _decode as sdk_decode
from azure.eventhub._pyamqp.message import Header as SdkHeader
from azure.eventhub._pyamqp.message import Message as SdkMessage
from azure.eventhub._pyamqp.message import Properties as SdkProperties
from azure.eventhub._transport._pyamqp_transport import PyamqpTransport
from azure.eventhub.amqp import AmqpAnnotatedMessage, AmqpMessageBodyType
from hypothesis import given, settings
from hypothesis import strategies as st

from local.eventhubs.amqp.message import (
    AMQP_SEQUENCE,
    AMQP_VALUE,
    APPLICATION_PROPERTIES,
    BATCH_MESSAGE_FORMAT,
    DATA,
    DELIVERY_ANNOTATIONS,
    FOOTER,
    HEADER,
    MESSAGE_ANNOTATIONS,
    PROPERTIES,
    AmqpSequence,
    AmqpValue,
    Header,
    Message,
    Properties,
    decode_message,
    encode_message,
    split_sections,
    unpack_batch,
    with_message_annotations,
)
from local.eventhubs.amqp.types import (
    Array,
    DecodeError,
    Described,
    EncodeError,
    Int,
    Long,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    encode,
)
from tests.local.eventhubs._sdk_wire import event_from_payload, payload_of

MESSAGE_ID = uuid.UUID("0f8fad5b-d9cb-469f-a165-70867728950e")
FULL = Message(
    header=Header(True, UByte(4), UInt(1000), False, UInt(2)),
    delivery_annotations={Symbol("x-opt-lock-token"): MESSAGE_ID},
    message_annotations={Symbol("x-opt-partition-key"): "k", ULong(7): Long(1)},
    properties=Properties(
        message_id=MESSAGE_ID,
        user_id=b"user",
        to="amqps://localhost/hub",
        subject="s",
        reply_to="r",
        correlation_id=ULong(5),
        content_type=Symbol("application/json"),
        content_encoding=Symbol("utf-8"),
        absolute_expiry_time=Timestamp(2),
        creation_time=Timestamp(1),
        group_id="g",
        group_sequence=UInt(3),
        reply_to_group_id="rg",
    ),
    application_properties={"schema": "v1", "count": Int(3), "ok": True, "pi": 3.14},
    body=[b"part one", b"part two"],
    footer={Symbol("x-opt-hash"): b"\x00"},
)


def sdk_outgoing(event: EventData | AmqpAnnotatedMessage) -> bytes:
    """The bytes the SDK sends for one event (as `send_event` / `send_batch` encode it)."""
    raw = event.raw_amqp_message if isinstance(event, EventData) else event
    return payload_of(PyamqpTransport.to_outgoing_amqp_message(raw))


def test_every_section_round_trips() -> None:
    data = encode_message(FULL)
    assert decode_message(data) == FULL
    assert encode_message(decode_message(data)) == data
    assert [code for code, _ in split_sections(data)] == [
        HEADER,
        DELIVERY_ANNOTATIONS,
        MESSAGE_ANNOTATIONS,
        PROPERTIES,
        APPLICATION_PROPERTIES,
        DATA,
        DATA,
        FOOTER,
    ]


@pytest.mark.parametrize(
    "body",
    [[], [b""], AmqpValue(None), AmqpValue({"k": [Long(1)]}), AmqpSequence([[Long(1)], ["a"]])],
    ids=repr,
)
def test_every_body_kind_round_trips(body: Any) -> None:
    data = encode_message(Message(body=body))
    assert decode_message(data) == Message(body=body)
    codes = {AmqpValue: {AMQP_VALUE}, AmqpSequence: {AMQP_SEQUENCE}}.get(type(body), {DATA})
    assert {code for code, _ in split_sections(data)} <= codes


def test_plain_values_are_given_their_section_types() -> None:
    message = Message(
        message_annotations={"x-opt-a": 1, 5: None},
        properties=Properties(message_id=7, user_id=bytearray(b"u")),
    )
    decoded = decode_message(encode_message(message))
    assert decoded.message_annotations == {Symbol("x-opt-a"): Long(1), ULong(5): None}
    assert [type(k) for k in decoded.message_annotations] == [Symbol, ULong]
    assert type(decoded.properties.message_id) is ULong
    assert decoded.properties.user_id == b"u"


@pytest.mark.parametrize(
    ("message", "reason"),
    [
        (Message(application_properties={Symbol("k"): 1, 2: 3}), "keys must be strings"),
        (Message(message_annotations={b"k": 1}), "bad annotations"),
        (Message(properties=Properties(message_id=1.5)), "message id"),
        (Message(header=Header(priority=300)), "Header.priority"),
        (Message(body=["text"]), "data section holds bytes"),
    ],
)
def test_encode_message_refuses_invalid_sections(message: Message, reason: str) -> None:
    with pytest.raises(EncodeError, match=reason):
        encode_message(message)


def section(code: int, value: Any) -> bytes:
    return encode(Described(ULong(code), value))


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"\x40", "must be a described value"),
        (section(0x79, None), "unknown message section"),
        (b"\x00\x45\x40", "section descriptor is a ulong or a symbol"),
        (section(HEADER, []) + section(HEADER, []), "appears twice"),
        (section(DATA, b"x") + section(AMQP_VALUE, None), "mixes"),
        (section(AMQP_VALUE, None) + section(AMQP_VALUE, None), "appears twice"),
        (section(DATA, "text"), "data section holds str"),
        (section(AMQP_SEQUENCE, {}), "amqp-sequence section holds dict"),
        (section(APPLICATION_PROPERTIES, []), "application_properties section holds list"),
        (section(HEADER, [UInt(1)]), "Header.durable: expected boolean"),
        (section(PROPERTIES, [1.5]), "message id"),
        (section(DATA, b"abc")[:-1], "truncated"),
    ],
)
def test_decode_message_refuses_malformed_messages(data: bytes, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_message(data)


def test_decode_message_accepts_symbolic_descriptors_and_any_section_order() -> None:
    data = (
        encode(Described(Symbol("amqp:data:binary"), b"x"))
        + section(DELIVERY_ANNOTATIONS, {Symbol("a"): None})  # where the SDK writes it: last
    )
    assert decode_message(data) == Message(delivery_annotations={Symbol("a"): None}, body=[b"x"])


def test_with_message_annotations_adds_the_section_in_spec_order() -> None:
    original = encode_message(
        Message(header=Header(durable=True), properties=Properties(subject="s"), body=[b"b"])
    )
    stamped = with_message_annotations(original, {"x-opt-offset": "10"})
    sections = split_sections(stamped)
    assert [code for code, _ in sections] == [HEADER, MESSAGE_ANNOTATIONS, PROPERTIES, DATA]
    assert decode_message(stamped).message_annotations == {Symbol("x-opt-offset"): "10"}
    assert b"".join(raw for code, raw in sections if code != MESSAGE_ANNOTATIONS) == original


def test_with_message_annotations_merges_and_overrides() -> None:
    original = encode_message(
        Message(
            message_annotations={"x-opt-partition-key": "k", "x-opt-offset": "old"}, body=[b"b"]
        )
    )
    stamped = with_message_annotations(
        original, {"x-opt-offset": "new", "x-opt-sequence-number": Long(3)}
    )
    assert decode_message(stamped).message_annotations == {
        Symbol("x-opt-partition-key"): "k",
        Symbol("x-opt-offset"): "new",
        Symbol("x-opt-sequence-number"): Long(3),
    }


def test_with_message_annotations_moves_a_trailing_delivery_annotations_before_it() -> None:
    original = section(DATA, b"x") + section(DELIVERY_ANNOTATIONS, {Symbol("d"): None})
    stamped = with_message_annotations(original, {"x-opt-offset": "1"})
    assert [code for code, _ in split_sections(stamped)] == [
        DELIVERY_ANNOTATIONS,
        MESSAGE_ANNOTATIONS,
        DATA,
    ]


def test_with_message_annotations_refuses_a_non_map_or_repeated_section() -> None:
    with pytest.raises(DecodeError, match="message-annotations section holds list"):
        with_message_annotations(section(MESSAGE_ANNOTATIONS, []), {"a": 1})
    twice = section(MESSAGE_ANNOTATIONS, {}) + section(MESSAGE_ANNOTATIONS, {})
    with pytest.raises(DecodeError, match="appears twice"):
        with_message_annotations(twice, {"a": 1})


def test_split_sections_cuts_without_decoding_contents() -> None:
    data = section(DATA, b"x" * 300) + encode(Described(Symbol("amqp:footer:map"), {}))
    assert split_sections(memoryview(data)) == [
        (DATA, section(DATA, b"x" * 300)),
        (FOOTER, data[-21:]),
    ]
    assert split_sections(b"") == []


def test_unpack_batch_refuses_a_non_data_body() -> None:
    with pytest.raises(DecodeError, match="must be data sections"):
        unpack_batch(section(AMQP_VALUE, None))
    assert unpack_batch(section(HEADER, [])) == []


# --- SDK interop: messages the SDK produces ----------------------------------------------------


def sdk_events() -> list[EventData | AmqpAnnotatedMessage]:
    plain = EventData("hello")
    rich = EventData(b"\x00\x01binary")
    rich.properties = {
        "schema": "v1",
        "count": 3,
        "ratio": 0.5,
        "ok": True,
        "raw": b"r",
        "id": MESSAGE_ID,
    }
    rich.message_id = "m-1"
    rich.content_type = "application/json"
    rich.correlation_id = "c-1"
    value = AmqpAnnotatedMessage(
        value_body={"k": [1, "a"]}, header={"durable": True, "priority": 5}
    )
    sequence = AmqpAnnotatedMessage(sequence_body=[[1, 2], ["x"]], footer={"x-opt-f": 1})
    return [plain, rich, value, sequence]


@pytest.mark.parametrize("event", sdk_events(), ids=["plain", "rich", "value", "sequence"])
def test_sdk_messages_re_encode_byte_for_byte(event: Any) -> None:
    data = sdk_outgoing(event)
    assert encode_message(decode_message(data)) == data


def test_we_read_an_sdk_event_right() -> None:
    rich = sdk_events()[1]
    message = decode_message(sdk_outgoing(rich))
    assert message.body == [b"\x00\x01binary"]
    assert message.application_properties == {
        "schema": "v1",
        "count": Int(3),
        "ratio": 0.5,
        "ok": True,
        "raw": b"r",
        "id": MESSAGE_ID,
    }
    assert message.properties == Properties(
        message_id="m-1", content_type=Symbol("application/json"), correlation_id="c-1"
    )


def test_we_read_sdk_value_and_sequence_bodies() -> None:
    _, _, value, sequence = sdk_events()
    assert decode_message(sdk_outgoing(value)).body == AmqpValue({"k": [Int(1), "a"]})
    assert decode_message(sdk_outgoing(value)).header == Header(durable=True, priority=UByte(5))
    assert decode_message(sdk_outgoing(sequence)).body == AmqpSequence([[Int(1), Int(2)], ["x"]])
    assert value.body_type == AmqpMessageBodyType.VALUE


def test_we_unpack_an_sdk_batch() -> None:
    batch = EventDataBatch(partition_key="k")
    for i in range(3):
        event = EventData(f"event {i}")
        event.properties = {"schema": "v1", "count": i}
        batch.add(event)
    data = payload_of(batch._message)
    assert batch._message._code == BATCH_MESSAGE_FORMAT
    envelope = decode_message(data)
    assert envelope.message_annotations == {Symbol("x-opt-partition-key"): "k"}
    assert envelope.header == Header(durable=True)
    assert encode_message(envelope) == data
    inner = [decode_message(raw) for raw in unpack_batch(data)]
    assert [m.body for m in inner] == [[b"event 0"], [b"event 1"], [b"event 2"]]
    assert [m.application_properties for m in inner] == [
        {"schema": "v1", "count": Int(i)} for i in range(3)
    ]
    # Each inner message carries the key too: the SDK stamps it on every event it adds.
    assert {m.message_annotations[Symbol("x-opt-partition-key")] for m in inner} == {"k"}


def test_sdk_delivery_annotations_come_last_and_still_decode() -> None:
    event = AmqpAnnotatedMessage(data_body=b"x", delivery_annotations={"x-opt-d": 1})
    data = sdk_outgoing(event)
    assert [code for code, _ in split_sections(data)] == [DATA, DELIVERY_ANNOTATIONS]
    assert decode_message(data).delivery_annotations == {Symbol("x-opt-d"): Int(1)}


def test_we_read_the_sdks_cbs_and_management_requests() -> None:
    put_token = SdkMessage(
        value="SharedAccessSignature sr=...",
        properties=SdkProperties(message_id=MESSAGE_ID),
        application_properties={
            "name": "sb://localhost/hub",
            "operation": "put-token",
            "type": "servicebus.windows.net:sastoken",
            "expiration": 1_900_000_000,
        },
    )
    message = decode_message(payload_of(put_token))
    assert message.body == AmqpValue("SharedAccessSignature sr=...")
    assert message.properties.message_id == MESSAGE_ID
    assert message.application_properties["expiration"] == Int(1_900_000_000)
    read = SdkMessage(
        application_properties={
            "name": "hub",
            "operation": "READ",
            "type": "com.microsoft:eventhub",
        },
        properties=SdkProperties(message_id=MESSAGE_ID, reply_to="$management-reply"),
        header=SdkHeader(durable=True),
    )
    assert decode_message(payload_of(read)).properties.reply_to == "$management-reply"
    assert encode_message(decode_message(payload_of(read))) == payload_of(read)


# --- SDK interop: messages we produce ----------------------------------------------------------


def test_the_sdk_reads_our_delivered_event() -> None:
    stored = sdk_outgoing(sdk_events()[1])
    delivered = with_message_annotations(
        stored,
        {
            "x-opt-sequence-number": Long(7),
            "x-opt-offset": "1024",
            "x-opt-enqueued-time": Timestamp(1_700_000_000_000),
            "x-opt-partition-key": "k",
        },
    )
    event = event_from_payload(delivered)
    assert (event.sequence_number, event.offset, event.partition_key) == (7, "1024", b"k")
    assert event.enqueued_time.timestamp() == 1_700_000_000
    assert b"".join(event.body) == b"\x00\x01binary"
    assert event.properties[b"count"] == 3
    assert (event.message_id, event.content_type, event.correlation_id) == (
        "m-1",
        "application/json",
        "c-1",
    )


def test_the_sdk_reads_our_management_reply() -> None:
    reply = Message(
        properties=Properties(correlation_id=MESSAGE_ID),
        application_properties={"status-code": Int(200), "status-description": "OK"},
        body=AmqpValue(
            {
                "name": "hub",
                "created_at": Timestamp(1_700_000_000_000),
                "partition_ids": Array(["0", "1"], str),
            }
        ),
    )
    sdk = sdk_decode.decode_payload(memoryview(encode_message(reply)))
    assert sdk.properties.correlation_id == MESSAGE_ID
    assert sdk.application_properties == {b"status-code": 200, b"status-description": b"OK"}
    assert sdk.value == {
        b"name": b"hub",
        b"created_at": 1_700_000_000_000,
        b"partition_ids": [b"0", b"1"],
    }


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=100, deadline=None)
@given(
    st.dictionaries(
        st.text(max_size=5), st.one_of(st.text(max_size=5), st.integers(-5, 5)), max_size=4
    ),
    st.lists(st.binary(max_size=20), max_size=3),
    st.dictionaries(st.sampled_from(["x-opt-a", "x-opt-b"]), st.text(max_size=5)),
)
def test_property_stamping_annotations_keeps_every_other_byte(
    props: dict[str, Any], body: list[bytes], annotations: dict[str, str]
) -> None:
    original = encode_message(
        Message(header=Header(durable=True), application_properties=props, body=body)
    )
    stamped = with_message_annotations(original, annotations)
    assert (
        b"".join(raw for code, raw in split_sections(stamped) if code != MESSAGE_ANNOTATIONS)
        == original
    )
    assert decode_message(stamped).message_annotations == annotations


@settings(max_examples=500, deadline=None)
@given(st.data())
def test_property_corrupted_messages_raise_only_decode_error(data: st.DataObject) -> None:
    raw = bytearray(encode_message(FULL))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    blob = bytes(raw[: data.draw(st.integers(0, len(raw)))])
    for fn in (
        decode_message,
        split_sections,
        unpack_batch,
        lambda b: with_message_annotations(b, {}),
    ):
        with contextlib.suppress(DecodeError):
            fn(blob)
