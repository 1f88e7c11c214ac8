import contextlib
import dataclasses
from typing import Any

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from local.eventhubs.amqp.frames import FrameReader, encode_frame
from local.eventhubs.amqp.performatives import (
    AMQP_PERFORMATIVES,
    SASL_PERFORMATIVES,
    Accepted,
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Error,
    Flow,
    Modified,
    Open,
    Received,
    Rejected,
    Released,
    SASLChallenge,
    SASLInit,
    SASLMechanisms,
    SASLOutcome,
    SASLResponse,
    Source,
    Target,
    Transfer,
    decode_performative,
    encode_performative,
    from_described,
)
from local.eventhubs.amqp.types import (
    Array,
    DecodeError,
    Described,
    EncodeError,
    Long,
    Symbol,
    UByte,
    UInt,
    ULong,
    UShort,
    decode,
    encode,
)
from tests.local.eventhubs._sdk_wire import SdkPeer, consumer, producer_link, sdk_fields

SELECTOR = Symbol("apache.org:selector-filter:string")
ERROR = Error(Symbol("amqp:not-found"), "no such hub", {Symbol("k"): "v"})
SOURCE = Source(
    address="amqps://localhost/hub/ConsumerGroups/$Default/Partitions/0",
    durable=UInt(1),
    expiry_policy=Symbol("never"),
    timeout=UInt(5),
    dynamic=True,
    dynamic_node_properties={Symbol("p"): Long(1)},
    distribution_mode=Symbol("copy"),
    filter={SELECTOR: Described(SELECTOR, "amqp.annotation.x-opt-offset > '5'")},
    default_outcome=Released(),
    outcomes=(Symbol("amqp:accepted:list"),),
    capabilities=(Symbol("a"), Symbol("b")),
)
TARGET = Target(
    "hub", UInt(2), Symbol("link-detach"), UInt(1), True, {Symbol("x"): None}, (Symbol("c"),)
)
EVERY_FIELD_SET = [
    Open(
        "c",
        "h",
        UInt(512),
        UShort(7),
        UInt(30000),
        ("en",),
        ("de",),
        ("o",),
        ("d",),
        {Symbol("p"): "v"},
    ),
    Begin(
        remote_channel=UShort(3),
        next_outgoing_id=UInt(1),
        incoming_window=UInt(2),
        outgoing_window=UInt(3),
        handle_max=UInt(4),
        offered_capabilities=(Symbol("o"),),
        desired_capabilities=(Symbol("d"),),
        properties={Symbol("p"): b"v"},
    ),
    Attach(
        "link",
        UInt(1),
        True,
        UByte(1),
        UByte(1),
        SOURCE,
        TARGET,
        {b"\x00\x01": Accepted()},
        True,
        UInt(9),
        ULong(2**40),
        (Symbol("o"),),
        (Symbol("d"),),
        {Symbol("com.microsoft:epoch"): Long(0)},
    ),
    Flow(
        next_incoming_id=UInt(1),
        incoming_window=UInt(2),
        next_outgoing_id=UInt(3),
        outgoing_window=UInt(4),
        handle=UInt(5),
        delivery_count=UInt(6),
        link_credit=UInt(7),
        available=UInt(8),
        drain=True,
        echo=True,
        properties={Symbol("p"): None},
    ),
    Transfer(
        UInt(1),
        UInt(2),
        b"\xff\x00",
        UInt(0x80013700),
        True,
        True,
        UByte(1),
        Accepted(),
        True,
        True,
        True,
    ),
    Transfer(UInt(1), state=Received(UInt(1), ULong(2))),
    Transfer(UInt(1), state=Modified(True, False, {Symbol("x-opt-a"): "b", ULong(1): None})),
    Disposition(True, UInt(1), UInt(2), True, Rejected(ERROR), True),
    Disposition(False, UInt(1), state=Described(Symbol("amqp:declared:list"), [b"txn"])),
    Detach(UInt(1), True, ERROR),
    End(Error(Symbol("amqp:internal-error"))),
    Close(ERROR),
    SASLMechanisms((Symbol("ANONYMOUS"), Symbol("MSSBCBS"))),
    SASLInit(Symbol("ANONYMOUS"), b"", "localhost"),
    SASLChallenge(b"c"),
    SASLResponse(b"r"),
    SASLOutcome(UByte(0), b"welcome"),
]


@pytest.mark.parametrize("performative", EVERY_FIELD_SET, ids=lambda p: type(p).__name__)
def test_every_field_round_trips(performative: Any) -> None:
    data = encode_performative(performative)
    decoded, end = decode_performative(data + b"payload")
    assert decoded == performative
    assert end == len(data)
    assert encode_performative(decoded) == data


@pytest.mark.parametrize("cls", AMQP_PERFORMATIVES + SASL_PERFORMATIVES, ids=lambda c: c.__name__)
def test_encoding_writes_every_field_even_trailing_nulls(cls: type) -> None:
    sample = next(p for p in EVERY_FIELD_SET if type(p) is cls)
    mandatory_only = cls(
        **{
            f.name: getattr(sample, f.name)
            for f in dataclasses.fields(cls)
            if f.metadata.get("mandatory")
        }
    )
    value, _ = decode(encode_performative(mandatory_only))
    assert value.descriptor == cls.DESCRIPTOR
    assert len(value.value) == len(dataclasses.fields(cls))


def test_close_without_error_is_a_one_field_list() -> None:
    assert encode_performative(Close()).hex() == "005318c0020140"


def test_a_constructed_performative_holds_plain_values_and_encodes_wire_types() -> None:
    attach = Attach("n", 1, False, source=Source("a"), properties={"com.microsoft:epoch": 3})
    fields = decode(encode_performative(attach))[0].value
    assert type(fields[1]) is UInt
    assert type(fields[3]) is UByte
    assert fields[13] == {Symbol("com.microsoft:epoch"): Long(3)}
    assert type(next(iter(fields[13]))) is Symbol
    assert fields[5] == Described(
        ULong(0x28), ["a", UInt(0), Symbol("session-end"), UInt(0), False, *[None] * 6]
    )


def test_decoding_accepts_short_lists_and_fills_in_defaults() -> None:
    # What proton sends: an attach with only name, handle and role.
    short = encode(Described(ULong(0x12), ["n", UInt(0), True]))
    attach, _ = decode_performative(short)
    assert attach == Attach("n", UInt(0), True)
    assert attach.snd_settle_mode == UByte(2)
    assert attach.rcv_settle_mode == UByte(0)
    assert attach.source is None
    assert attach.properties is None
    opened, _ = decode_performative(encode(Described(ULong(0x10), ["c"])))
    assert opened.max_frame_size == UInt(4294967295)
    assert opened.channel_max == UShort(65535)


def test_a_null_field_means_its_default() -> None:
    data = encode(Described(ULong(0x12), ["n", UInt(0), True, None, None, None, None, None, None]))
    assert decode_performative(data)[0].snd_settle_mode == UByte(2)


def test_decoding_accepts_symbolic_descriptors() -> None:
    data = encode(Described(Symbol("amqp:detach:list"), [UInt(4)]))
    assert decode_performative(data)[0] == Detach(UInt(4))


def test_transfer_keeps_binary_tags_and_absent_message_format() -> None:
    transfer, _ = decode_performative(
        encode(Described(ULong(0x14), [UInt(0), UInt(7), b"\xff\xfe"]))
    )
    assert transfer.delivery_tag == b"\xff\xfe"
    assert type(transfer.delivery_tag) is bytes
    assert transfer.message_format is None
    assert transfer.more is False


def test_multiple_symbols_decode_to_a_tuple_whether_one_or_many() -> None:
    single = encode(Described(ULong(0x40), [Symbol("ANONYMOUS")]))
    many = encode(Described(ULong(0x40), [Array([Symbol("A"), Symbol("B")])]))
    assert decode_performative(single)[0].sasl_server_mechanisms == (Symbol("ANONYMOUS"),)
    assert decode_performative(many)[0].sasl_server_mechanisms == ("A", "B")
    for given_value in ("ANONYMOUS", ["ANONYMOUS"], Array([Symbol("ANONYMOUS")])):
        encoded = encode_performative(SASLMechanisms(given_value))
        assert decode(encoded)[0].value == [Array([Symbol("ANONYMOUS")])]


@pytest.mark.parametrize(
    ("fields", "reason"),
    [
        ([UInt(0), True], "Attach.name: expected string"),
        (["n", UInt(0)], "lacks mandatory role"),
        (["n", None, True], "lacks mandatory handle"),
        (["n", Long(0), True], "Attach.handle: expected uint"),
        (["n", UInt(0), True, UInt(1)], "Attach.snd_settle_mode: expected ubyte"),
        (["n", UInt(0), True, None, None, "src"], "expected a source"),
        (["n", UInt(0), True, None, None, Described(ULong(0x29), [])], "expected a source"),
        (["n", UInt(0), True, None, None, Described(ULong(0x28), [Long(1)])], "Source.address"),
        (["n", UInt(0), True, *[None] * 10, {"k": 1}], "symbol-keyed map"),
        (["n", UInt(0), True, *[None] * 9, UInt(1)], "array of symbols"),
        (["n", UInt(0), True, *[None] * 12], "list of <= 14 fields"),
        ("not a list", "list of <= 14"),
    ],
)
def test_decoding_refuses_wrong_fields_naming_them(fields: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_performative(encode(Described(ULong(0x12), fields)))


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (UInt(5), "must be a described list"),
        (Described(ULong(0x99), []), "unknown performative"),
        (Described(ULong(0x28), []), "unknown performative"),  # a source is not a frame body
        (Described(Symbol("amqp:nope:list"), []), "unknown performative"),
    ],
)
def test_decoding_refuses_what_is_not_a_frame_body(value: Any, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode_performative(encode(value))


@pytest.mark.parametrize(
    ("performative", "reason"),
    [
        (Attach("n", None, True), "Attach.handle is mandatory"),
        (Attach("n", -1, True), "Attach.handle"),
        (Attach("n", True, True), "expected uint"),
        (Attach(5, 1, True), "expected a string"),
        (Attach("n", 1, 1), "expected a boolean"),
        (Transfer(1, delivery_tag="text"), "expected bytes"),
        (Attach("n", 1, True, source=Target()), "expected a source"),
        (Open("c", properties={1: 2}), "Open.properties"),
        (SASLInit(b"ANONYMOUS"), "expected symbol"),
        (Modified(message_annotations={b"k": 1}), "annotation key"),
    ],
)
def test_encoding_refuses_values_that_do_not_fit(performative: Any, reason: str) -> None:
    with pytest.raises(EncodeError, match=reason):
        encode_performative(performative)


def test_from_described_builds_registered_types() -> None:
    assert from_described(Described(ULong(0x24), [])) == Accepted()
    assert from_described(Described(Symbol("amqp:error:list"), [Symbol("c")])) == Error(Symbol("c"))
    with pytest.raises(DecodeError, match="unknown descriptor"):
        from_described(Described(ULong(0x99), []))


# --- SDK interop: what the SDK's own objects send, we read ------------------------------------


def test_we_decode_the_frames_of_an_sdk_consumer() -> None:
    peer = SdkPeer()
    handler = consumer(peer, offset="4096", owner_level=0)
    handler._handler._link._outgoing_flow()
    opened, begun, attached, flow = (
        f.body for f in FrameReader(1 << 20).feed(peer.recorder.take())
    )
    assert opened == Open(
        "sdk-container",
        "localhost",
        UInt(1048576),
        UShort(65535),
        UInt(60000),
        properties={Symbol("product"): "test"},
    )
    assert begun == Begin(
        next_outgoing_id=UInt(0), incoming_window=UInt(1), outgoing_window=UInt(1)
    )
    assert attached.role is True
    assert (
        attached.source.address == "amqps://localhost:5672/hub/ConsumerGroups/$Default/Partitions/0"
    )
    assert attached.source.filter == {
        SELECTOR: Described(SELECTOR, "amqp.annotation.x-opt-offset > '4096'")
    }
    assert attached.properties == {
        Symbol("com.microsoft:epoch"): Long(0),
        Symbol("com.microsoft:timeout"): Long(0),
    }
    assert attached.desired_capabilities == (Symbol("com.microsoft:georeplication"),)
    assert attached.max_message_size == ULong(1048576)
    assert isinstance(attached.target, Target)
    assert flow == Flow(
        incoming_window=UInt(1),
        next_outgoing_id=UInt(0),
        outgoing_window=UInt(1),
        handle=attached.handle,
        delivery_count=UInt(0),
        link_credit=UInt(0),
    )


def test_we_decode_the_attach_and_transfer_of_an_sdk_producer() -> None:
    from azure.eventhub._pyamqp.message import BatchMessage

    peer = SdkPeer()
    link = producer_link(peer)
    link.send_transfer(BatchMessage(data=[b"inner"]))
    frames = FrameReader(1 << 20).feed(peer.recorder.take())
    attach, transfer = frames[2].body, frames[3].body
    assert attach.role is False
    assert attach.target.address == "amqps://localhost:5672/hub"
    assert transfer == Transfer(
        attach.handle,
        delivery_id=UInt(0),
        delivery_tag=b"\x00\x00\x00\x01",
        message_format=UInt(0x80013700),
        settled=False,
    )
    assert frames[3].payload.startswith(b"\x00\x53\x75")


# --- SDK interop: what we send, the SDK reads by position ------------------------------------


def test_the_sdk_reads_our_performatives_by_position() -> None:
    code, fields = sdk_fields(encode_frame(0, EVERY_FIELD_SET[2]))  # Attach, everything set
    assert code == 0x12
    assert len(fields) == 14
    assert fields[0] == b"link"
    assert fields[1] == 1
    assert fields[5][0] == SOURCE.address.encode()
    # The SDK drops descriptors of values it does not know, so a filter reads as its string.
    assert fields[5][7] == {SELECTOR.encode(): b"amqp.annotation.x-opt-offset > '5'"}
    assert fields[5][8] == {"released": []}
    assert len(fields[5]) == 11
    assert len(fields[6]) == 7
    assert fields[9] == 9
    assert fields[13] == {b"com.microsoft:epoch": 0}

    code, fields = sdk_fields(
        encode_frame(0, Transfer(UInt(3), UInt(4), b"\x00\x07", UInt(0)), b"msg")
    )
    assert (code, fields[:5], bytes(fields[11])) == (0x14, [3, 4, b"\x00\x07", 0, None], b"msg")

    code, fields = sdk_fields(
        encode_frame(0, Detach(UInt(1), True, Error(Symbol("amqp:link:stolen"))))
    )
    assert fields == [1, True, [b"amqp:link:stolen", None, None]]

    code, fields = sdk_fields(
        encode_frame(0, Disposition(True, UInt(1), settled=True, state=Accepted()))
    )
    assert fields[:5] == [True, 1, None, True, {"accepted": []}]

    _, fields = sdk_fields(encode_frame(0, SASLMechanisms(["ANONYMOUS"]), frame_type=1))
    assert fields == [[b"ANONYMOUS"]]


def test_the_sdk_link_accepts_our_attach_reply() -> None:
    peer = SdkPeer()
    handler = consumer(peer)
    attach = FrameReader(1 << 20).feed(peer.recorder.take())[2].body
    reply = dataclasses.replace(attach, handle=UInt(0), role=False, initial_delivery_count=UInt(0))
    peer.deliver(encode_frame(0, reply))
    assert handler._handler._link.state.name == "ATTACHED"
    assert handler._handler._link.remote_handle == 0


# --- properties -------------------------------------------------------------------------------


@settings(max_examples=200, deadline=None)
@given(st.sampled_from(EVERY_FIELD_SET), st.data())
def test_property_corrupted_performatives_raise_only_decode_error(
    performative: Any, data: st.DataObject
) -> None:
    raw = bytearray(encode_performative(performative))
    for _ in range(data.draw(st.integers(1, 3))):
        raw[data.draw(st.integers(0, len(raw) - 1))] = data.draw(st.integers(0, 255))
    with contextlib.suppress(DecodeError):
        decode_performative(bytes(raw[: data.draw(st.integers(0, len(raw)))]))
