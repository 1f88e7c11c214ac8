import contextlib
import dataclasses
import struct
from datetime import UTC, datetime
from typing import Any

import pytest
from azure.eventhub import EventData, EventDataBatch
from hypothesis import given, settings
from hypothesis import strategies as st

from local.eventhubs.amqp.frames import (
    AMQP_HEADER,
    FRAME_SASL,
    MIN_MAX_FRAME_SIZE,
    SASL_HEADER,
    Frame,
    FrameError,
    FrameReader,
    ProtocolHeader,
    encode_frame,
    split_transfers,
)
from local.eventhubs.amqp.message import (
    BATCH_MESSAGE_FORMAT,
    Message,
    encode_message,
    with_message_annotations,
)
from local.eventhubs.amqp.performatives import (
    Attach,
    Begin,
    Close,
    Detach,
    Error,
    Open,
    SASLInit,
    SASLMechanisms,
    SASLOutcome,
    Transfer,
)
from local.eventhubs.amqp.types import (
    DecodeError,
    EncodeError,
    Int,
    Long,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    UShort,
)
from tests.local.eventhubs._sdk_wire import (
    Recorder,
    SaslClient,
    SdkPeer,
    consumer,
    deliver,
    payload_of,
    producer_link,
)

TRANSFER = Transfer(UInt(1), UInt(7), b"\x00\x00\x00\x07", UInt(0), settled=True)


def test_headers_are_the_spec_bytes() -> None:
    assert AMQP_HEADER == b"AMQP\x00\x01\x00\x00"
    assert SASL_HEADER == b"AMQP\x03\x01\x00\x00"


def test_encode_frame_writes_size_offset_type_and_channel() -> None:
    frame = encode_frame(5, Close())
    assert frame[:8] == struct.pack(">IBBH", len(frame), 2, 0, 5)
    assert encode_frame(0, SASLOutcome(UByte(0)), frame_type=FRAME_SASL)[5] == 1
    assert encode_frame(3, None) == b"\x00\x00\x00\x08\x02\x00\x00\x03"
    with_payload = encode_frame(0, TRANSFER, b"body")
    assert with_payload.endswith(b"body")


@pytest.mark.parametrize(
    ("call", "reason"),
    [
        (lambda: encode_frame(0, None, b"x"), "empty frame"),
        (lambda: encode_frame(0, Close(), b"x"), "only a Transfer"),
        (lambda: encode_frame(0, Close(), frame_type=FRAME_SASL), "cannot travel"),
        (lambda: encode_frame(0, SASLInit(Symbol("ANONYMOUS"))), "cannot travel"),
        (lambda: encode_frame(0, Close(), frame_type=7), "cannot travel"),
        (lambda: encode_frame(70000, Close()), "out of range"),
    ],
)
def test_encode_frame_refuses_invalid_frames(call: object, reason: str) -> None:
    with pytest.raises(EncodeError, match=reason):
        call()  # type: ignore[operator]


def test_reader_returns_many_frames_from_one_feed() -> None:
    data = encode_frame(0, Close()) + encode_frame(1, None) + encode_frame(2, TRANSFER, b"msg")
    assert FrameReader(512).feed(data) == [
        Frame(0, 0, Close()),
        Frame(1, 0, None),
        Frame(2, 0, TRANSFER, b"msg"),
    ]


def test_reader_reassembles_frames_fed_byte_by_byte() -> None:
    data = encode_frame(0, Open("c")) + encode_frame(0, TRANSFER, b"payload")
    reader = FrameReader(512)
    frames = [f for i in range(len(data)) for f in reader.feed(data[i : i + 1])]
    assert frames == [Frame(0, 0, Open("c")), Frame(0, 0, TRANSFER, b"payload")]
    assert reader.buffered == b""


def test_reader_keeps_partial_frames_buffered() -> None:
    data = encode_frame(0, Close())
    reader = FrameReader(512)
    assert reader.feed(data[:5]) == []
    assert reader.feed(data[5:-1]) == []
    assert reader.buffered == data[:-1]
    assert reader.feed(data[-1:]) == [Frame(0, 0, Close())]


def test_reader_skips_an_extended_header() -> None:
    body = encode_frame(0, Close())[8:]
    frame = struct.pack(">IBBH", 12 + len(body), 3, 0, 0) + b"\xee" * 4 + body
    assert FrameReader(512).feed(frame) == [Frame(0, 0, Close())]


def test_reader_reads_sasl_frames() -> None:
    frame = encode_frame(0, SASLInit(Symbol("ANONYMOUS"), b"", "localhost"), frame_type=FRAME_SASL)
    assert FrameReader(512).feed(frame) == [
        Frame(0, 1, SASLInit(Symbol("ANONYMOUS"), b"", "localhost"))
    ]


def test_reader_refuses_a_frame_over_max_frame_size_from_its_header() -> None:
    reader = FrameReader(MIN_MAX_FRAME_SIZE)
    big = encode_frame(0, TRANSFER, b"x" * 600)
    with pytest.raises(FrameError, match="exceeds max-frame-size 512"):
        reader.feed(big[:8])  # refused before the rest arrives
    reader = FrameReader(MIN_MAX_FRAME_SIZE)
    reader.max_frame_size = 1024  # raised after Open
    assert reader.feed(big)[0].payload == b"x" * 600


def retyped(frame: bytes, frame_type: int) -> bytes:
    return frame[:5] + bytes((frame_type,)) + frame[6:]


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (struct.pack(">IBBH", 7, 2, 0, 0), "invalid frame header"),
        (struct.pack(">IBBH", 8, 1, 0, 0), "invalid frame header"),
        (struct.pack(">IBBH", 8, 3, 0, 0), "invalid frame header"),
        (struct.pack(">IBBH", 8, 2, 9, 0), "unknown frame type"),
        (struct.pack(">IBBH", 9, 2, 0, 0) + b"\xff", "bad frame body on channel 0"),
        (struct.pack(">IBBH", 9, 2, 0, 0) + b"\x40", "must be a described list"),
        (
            encode_frame(0, Close())[:5] + b"\x01" + encode_frame(0, Close())[6:],
            "Close cannot travel in a SASL",
        ),
        (
            retyped(encode_frame(0, SASLOutcome(UByte(0)), frame_type=1), 0),
            "SASLOutcome cannot travel in an AMQP",
        ),
        (
            struct.pack(">IBBH", 8 + len(encode_frame(0, Close())) - 8 + 2, 2, 0, 0)
            + encode_frame(0, Close())[8:]
            + b"xx",
            "2 stray bytes after Close",
        ),
        (AMQP_HEADER, "protocol header arrived"),
    ],
)
def test_reader_refuses_malformed_frames_saying_why(data: bytes, reason: str) -> None:
    with pytest.raises(FrameError, match=reason):
        FrameReader(512).feed(data)
    assert issubclass(FrameError, DecodeError)


def test_reader_can_follow_protocol_headers_in_the_stream() -> None:
    stream = (
        SASL_HEADER
        + encode_frame(0, SASLInit(Symbol("ANONYMOUS")), frame_type=1)
        + AMQP_HEADER
        + encode_frame(0, Open("c"))
    )
    reader = FrameReader(512, protocol_headers=True)
    items = [item for i in range(0, len(stream), 3) for item in reader.feed(stream[i : i + 3])]
    assert items == [
        ProtocolHeader(SASL_HEADER),
        Frame(0, 1, SASLInit(Symbol("ANONYMOUS"))),
        ProtocolHeader(AMQP_HEADER),
        Frame(0, 0, Open("c")),
    ]


def test_split_transfers_leaves_a_small_delivery_whole() -> None:
    assert split_transfers(1, TRANSFER, b"abc", 512) == [encode_frame(1, TRANSFER, b"abc")]


def test_split_transfers_fragments_a_large_delivery() -> None:
    payload = bytes(range(256)) * 10
    frames = split_transfers(4, TRANSFER, payload, 512)
    assert len(frames) > 1
    assert all(len(f) <= 512 for f in frames)
    decoded = [f for frame in frames for f in FrameReader(512).feed(frame)]
    assert b"".join(f.payload for f in decoded) == payload
    assert {f.channel for f in decoded} == {4}
    assert decoded[0].body == dataclasses.replace(TRANSFER, more=True)
    assert all(f.body == Transfer(UInt(1), settled=True, more=True) for f in decoded[1:-1])
    assert decoded[-1].body == Transfer(UInt(1), settled=True, more=False)
    assert len(frames[0]) == 512


def test_split_transfers_needs_room_for_payload() -> None:
    with pytest.raises(EncodeError, match="no room"):
        split_transfers(0, TRANSFER, b"x" * 100, 30)


@settings(max_examples=100, deadline=None)
@given(st.binary(max_size=3000), st.integers(64, 1024))
def test_property_split_transfers_reassembles_within_max_frame_size(
    payload: bytes, max_size: int
) -> None:
    frames = split_transfers(0, TRANSFER, payload, max_size)
    assert all(len(f) <= max_size for f in frames)
    decoded = [f for frame in frames for f in FrameReader(max_size).feed(frame)]
    assert b"".join(f.payload for f in decoded) == payload
    assert [f.body.more for f in decoded] == [True] * (len(decoded) - 1) + [False]
    assert decoded[0].body.delivery_id == UInt(7)


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=100), st.data())
def test_property_reader_raises_only_frame_error(noise: bytes, data: st.DataObject) -> None:
    stream = bytearray(encode_frame(0, Attach("n", 0, True)) + encode_frame(0, TRANSFER, noise))
    for _ in range(data.draw(st.integers(0, 3))):
        stream[data.draw(st.integers(0, len(stream) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(FrameError):
        FrameReader(512, protocol_headers=data.draw(st.booleans())).feed(bytes(stream))


# --- SDK interop ------------------------------------------------------------------------------


def test_the_sdk_negotiates_sasl_with_our_frames() -> None:
    client = SaslClient(
        [
            SASL_HEADER,
            encode_frame(0, SASLMechanisms(["MSSBCBS", "ANONYMOUS"]), frame_type=FRAME_SASL),
            encode_frame(0, SASLOutcome(UByte(0)), frame_type=FRAME_SASL),
        ]
    )
    client._negotiate()  # raises if the SDK does not like what it read
    assert FrameReader(512, protocol_headers=True).feed(bytes(client.sent)) == [
        ProtocolHeader(SASL_HEADER),
        Frame(0, FRAME_SASL, SASLInit(Symbol("ANONYMOUS"), b"", "localhost")),
    ]


def test_the_sdk_sees_a_failed_sasl_outcome() -> None:
    client = SaslClient(
        [
            SASL_HEADER,
            encode_frame(0, SASLMechanisms(["ANONYMOUS"]), frame_type=FRAME_SASL),
            encode_frame(0, SASLOutcome(UByte(1), b"no"), frame_type=FRAME_SASL),
        ]
    )
    with pytest.raises(ValueError, match="SASL negotiation failed"):
        client._negotiate()


def test_the_sdk_connection_accepts_our_open() -> None:
    from azure.eventhub._pyamqp._connection import Connection
    from azure.eventhub._pyamqp.constants import ConnectionState

    connection = Connection("amqps://localhost:5672", transport=Recorder(), idle_timeout=60)
    connection._set_state(ConnectionState.OPEN_SENT)
    ours = Open(
        "emulator", max_frame_size=UInt(65536), channel_max=UShort(255), idle_time_out=UInt(120000)
    )
    deliver(connection, encode_frame(0, ours))
    assert connection.state == ConnectionState.OPENED
    assert connection._remote_max_frame_size == 65536
    assert connection._remote_idle_timeout == 120


def attached_consumer(peer: SdkPeer) -> Any:
    """An SDK partition consumer whose link our Begin and Attach replies have attached."""
    handler = consumer(peer)
    attach = FrameReader(1 << 20).feed(peer.recorder.take())[2].body
    begin = Begin(remote_channel=1, next_outgoing_id=0, incoming_window=5000, outgoing_window=5000)
    peer.deliver(encode_frame(0, begin))
    reply = Attach(
        attach.name,
        UInt(0),
        False,
        snd_settle_mode=UByte(1),
        source=attach.source,
        target=attach.target,
        initial_delivery_count=UInt(0),
        max_message_size=1 << 20,
    )
    peer.deliver(encode_frame(0, reply))
    assert handler._handler._link.state.name == "ATTACHED"
    return handler


def test_an_sdk_consumer_receives_our_delivery_as_the_right_event() -> None:
    """Our Begin, Attach reply and (fragmented) Transfer, through the SDK's own receive path."""
    peer = SdkPeer()
    handler = attached_consumer(peer)
    handler._handler._link.current_link_credit = 10
    stored = encode_message(
        Message(application_properties={"schema": "v1", "count": Int(3)}, body=[b"hello"])
    )
    delivered = with_message_annotations(
        stored,
        {
            "x-opt-sequence-number": Long(42),
            "x-opt-offset": "4096",
            "x-opt-enqueued-time": Timestamp(1_700_000_000_123),
            "x-opt-partition-key": "k",
        },
    )
    transfer = Transfer(UInt(0), UInt(0), b"\x00\x00\x00\x00", UInt(0), settled=True)
    frames = split_transfers(0, transfer, delivered, 64)
    assert len(frames) > 3
    for frame in frames:
        peer.deliver(frame)
    event: EventData = handler._next_message_in_buffer()
    assert event.sequence_number == 42
    assert event.offset == "4096"
    assert event.enqueued_time == datetime(2023, 11, 14, 22, 13, 20, 123000, tzinfo=UTC)
    assert event.partition_key == b"k"
    assert event.body_as_str() == "hello"
    assert event.properties == {b"schema": b"v1", b"count": 3}  # the SDK reads strings as bytes


def test_an_sdk_link_detached_by_us_reports_our_error() -> None:
    peer = SdkPeer()
    link = attached_consumer(peer)._handler._link
    error = Error(Symbol("amqp:link:stolen"), "a newer epoch took the partition", {})
    peer.deliver(encode_frame(0, Detach(UInt(0), True, error)))
    assert link.state.name == "ERROR"
    assert link._error.condition == b"amqp:link:stolen"
    assert link._error.description == b"a newer epoch took the partition"
    assert FrameReader(512).feed(peer.recorder.take())[-1] == Frame(1, 0, Detach(link.handle, True))


def test_we_reassemble_an_sdk_producers_multi_frame_batch() -> None:
    peer = SdkPeer()  # the SDK believes our max-frame-size is 512
    link = producer_link(peer)
    batch = EventDataBatch(partition_key="k")
    batch.add(EventData(b"x" * 2000))
    link.send_transfer(batch._message)
    frames = FrameReader(512).feed(peer.recorder.take())[3:]
    assert len(frames) == 5
    assert all(f.body.more for f in frames[:-1])
    assert not frames[-1].body.more
    # The SDK repeats delivery-id, tag and format on every fragment.
    assert {(f.body.delivery_id, f.body.delivery_tag, f.body.message_format) for f in frames} == {
        (UInt(0), b"\x00\x00\x00\x01", UInt(BATCH_MESSAGE_FORMAT))
    }
    assert b"".join(f.payload for f in frames) == payload_of(batch._message)
