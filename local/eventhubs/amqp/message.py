"""The AMQP 1.0 message format (part 3): sections, whole messages, and Event Hubs batches.

A message is a run of described sections: header, delivery-annotations, message-annotations,
properties, application-properties, a body (data sections, amqp-sequence sections or one
amqp-value) and a footer. Decoded values keep their AMQP types, so `encode_message` gives back
the very bytes the SDK sent. The server stores messages as raw bytes and uses
`with_message_annotations` to stamp sequence number, offset and enqueued time on delivery,
touching only the message-annotations section.

Example:
    >>> data = encode_message(Message(application_properties={"n": 1}, body=[b"hi"]))
    >>> decode_message(data).body
    [b'hi']
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

from local.eventhubs.amqp import _decoding
from local.eventhubs.amqp._composite import (
    ANNOTATIONS,
    BINARY,
    BOOL,
    MESSAGE_ID,
    STRING,
    SYMBOL,
    TIMESTAMP,
    UBYTE,
    UINT,
    Composite,
    described_list,
    opt,
)
from local.eventhubs.amqp.types import DecodeError, Described, EncodeError, Symbol, ULong, encode

__all__ = [
    "AMQP_SEQUENCE",
    "AMQP_VALUE",
    "APPLICATION_PROPERTIES",
    "BATCH_MESSAGE_FORMAT",
    "DATA",
    "DELIVERY_ANNOTATIONS",
    "FOOTER",
    "HEADER",
    "MESSAGE_ANNOTATIONS",
    "PROPERTIES",
    "AmqpSequence",
    "AmqpValue",
    "Header",
    "Message",
    "Properties",
    "decode_message",
    "encode_message",
    "split_sections",
    "unpack_batch",
    "with_message_annotations",
]

HEADER, DELIVERY_ANNOTATIONS, MESSAGE_ANNOTATIONS, PROPERTIES = 0x70, 0x71, 0x72, 0x73
APPLICATION_PROPERTIES, DATA, AMQP_SEQUENCE, AMQP_VALUE, FOOTER = 0x74, 0x75, 0x76, 0x77, 0x78
BATCH_MESSAGE_FORMAT = 0x80013700
"""Transfer message-format of an Event Hubs batch: each data section is a whole message."""

_NAMES = {
    "amqp:header:list": HEADER,
    "amqp:delivery-annotations:map": DELIVERY_ANNOTATIONS,
    "amqp:message-annotations:map": MESSAGE_ANNOTATIONS,
    "amqp:properties:list": PROPERTIES,
    "amqp:application-properties:map": APPLICATION_PROPERTIES,
    "amqp:data:binary": DATA,
    "amqp:amqp-sequence:list": AMQP_SEQUENCE,
    "amqp:amqp-value:*": AMQP_VALUE,
    "amqp:footer:map": FOOTER,
}
_DESCRIPTORS = {code: ULong(code) for code in _NAMES.values()}


@described_list(HEADER, "amqp:header:list")
@dataclass(frozen=True)
class Header(Composite):
    """Transport header. None means absent (the spec default applies), kept so bytes round-trip."""

    durable: bool | None = field(default=None, metadata=opt(BOOL))
    priority: int | None = field(default=None, metadata=opt(UBYTE))
    ttl: int | None = field(default=None, metadata=opt(UINT))
    first_acquirer: bool | None = field(default=None, metadata=opt(BOOL))
    delivery_count: int | None = field(default=None, metadata=opt(UINT))


@described_list(PROPERTIES, "amqp:properties:list")
@dataclass(frozen=True)
class Properties(Composite):
    """The bare message's standard properties (ids, addresses, content type, times in ms)."""

    message_id: Any = field(default=None, metadata=opt(MESSAGE_ID))
    user_id: bytes | None = field(default=None, metadata=opt(BINARY))
    to: str | None = field(default=None, metadata=opt(STRING))
    subject: str | None = field(default=None, metadata=opt(STRING))
    reply_to: str | None = field(default=None, metadata=opt(STRING))
    correlation_id: Any = field(default=None, metadata=opt(MESSAGE_ID))
    content_type: str | None = field(default=None, metadata=opt(SYMBOL))
    content_encoding: str | None = field(default=None, metadata=opt(SYMBOL))
    absolute_expiry_time: int | None = field(default=None, metadata=opt(TIMESTAMP))
    creation_time: int | None = field(default=None, metadata=opt(TIMESTAMP))
    group_id: str | None = field(default=None, metadata=opt(STRING))
    group_sequence: int | None = field(default=None, metadata=opt(UINT))
    reply_to_group_id: str | None = field(default=None, metadata=opt(STRING))


@dataclass(frozen=True)
class AmqpValue:
    """A body of one AMQP value (CBS and management requests and replies use this)."""

    value: Any


@dataclass(frozen=True)
class AmqpSequence:
    """A body of amqp-sequence sections; each inner list is one section."""

    sections: list[list[Any]]


Body = list[bytes] | AmqpValue | AmqpSequence


@dataclass
class Message:
    """An AMQP message; a None section is absent.

    ``body`` is a list of data sections (bytes), an `AmqpValue` or an `AmqpSequence`. Maps hold
    what was decoded, typed (annotation keys are `Symbol`s, application-property keys ``str``).
    """

    header: Header | None = None
    delivery_annotations: dict[Any, Any] | None = None
    message_annotations: dict[Any, Any] | None = None
    properties: Properties | None = None
    application_properties: dict[str, Any] | None = None
    body: Body = field(default_factory=list)
    footer: dict[Any, Any] | None = None


def _annotations(value: dict[Any, Any]) -> dict[Any, Any]:
    """Annotation keys are symbols or ulongs: plain ``str``/``int`` keys are converted."""
    try:
        return ANNOTATIONS.to_wire(value)
    except (TypeError, ValueError) as exc:
        raise EncodeError(f"bad annotations: {exc}") from exc


def _section(code: int, value: Any) -> Described:
    return Described(_DESCRIPTORS[code], value)


def encode_message(m: Message) -> bytes:
    """Encode a message, its sections in spec order; absent (None) sections are left out.

    Raises:
        EncodeError: a section holds a value with no AMQP encoding.
    """
    sections: list[Any] = []
    if m.header is not None:
        sections.append(m.header)
    if m.delivery_annotations is not None:
        sections.append(_section(DELIVERY_ANNOTATIONS, _annotations(m.delivery_annotations)))
    if m.message_annotations is not None:
        sections.append(_section(MESSAGE_ANNOTATIONS, _annotations(m.message_annotations)))
    if m.properties is not None:
        sections.append(m.properties)
    if m.application_properties is not None:
        props = m.application_properties
        if not all(isinstance(k, str) for k in props):
            raise EncodeError("application-properties keys must be strings")
        sections.append(_section(APPLICATION_PROPERTIES, {str(k): v for k, v in props.items()}))
    if isinstance(m.body, AmqpValue):
        sections.append(_section(AMQP_VALUE, m.body.value))
    elif isinstance(m.body, AmqpSequence):
        sections.extend(_section(AMQP_SEQUENCE, list(s)) for s in m.body.sections)
    else:
        for chunk in m.body:
            if not isinstance(chunk, bytes | bytearray | memoryview):
                raise EncodeError(f"a data section holds bytes, not {type(chunk).__name__}")
            sections.append(_section(DATA, bytes(chunk)))
    if m.footer is not None:
        sections.append(_section(FOOTER, _annotations(m.footer)))
    return b"".join(encode(s) for s in sections)


def _read_sections(data: bytes) -> list[tuple[int, int, int]]:
    """(code, start, value start) of each section; the value ends where the next section starts."""
    out = []
    pos = 0
    while pos < len(data):
        if data[pos] != 0x00:
            raise DecodeError(f"a message section must be a described value (offset {pos})")
        if data[pos + 1 : pos + 2] == b"\x53" and pos + 2 < len(data):  # smallulong: the usual form
            descriptor, value_pos = data[pos + 2], pos + 3
        else:
            descriptor, value_pos = _decoding.decode_value(data, pos + 1, 1)
            if type(descriptor) not in (ULong, Symbol):
                raise DecodeError(f"a section descriptor is a ulong or a symbol: {descriptor!r}")
        code = _NAMES.get(descriptor) if type(descriptor) is Symbol else descriptor
        if code not in _DESCRIPTORS:
            raise DecodeError(f"unknown message section {descriptor!r} at offset {pos}")
        out.append((code, pos, value_pos))
        pos = _decoding.skip_value(data, value_pos, 1)
    return out


def split_sections(data: bytes | bytearray | memoryview) -> list[tuple[int, bytes]]:
    """Cut an encoded message into (section code, raw bytes of the section), in order.

    Only the section boundaries are checked, not their contents, so this is cheap.

    Raises:
        DecodeError: the bytes are not a run of described sections.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    sections = _read_sections(buf)
    bounds = [start for _, start, _ in sections] + [len(buf)]
    return [(code, buf[bounds[i] : bounds[i + 1]]) for i, (code, _, _) in enumerate(sections)]


def _expect(value: Any, kind: type | tuple[type, ...], what: str) -> Any:
    if not isinstance(value, kind):
        raise DecodeError(f"{what} section holds {type(value).__name__}")
    return value


def decode_message(data: bytes | bytearray | memoryview) -> Message:
    """Decode an encoded message; values keep their AMQP types.

    Sections are accepted in any order (the SDK writes delivery-annotations last), but each
    non-body section at most once and the body all of one kind.

    Raises:
        DecodeError: malformed bytes, a repeated section, a mixed body, or a section of the
            wrong type.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    m = Message()
    seen: set[int] = set()
    data_body: list[bytes] = []
    sequences: list[list[Any]] = []
    for code, _, value_pos in _read_sections(buf):
        value, _ = _decoding.decode_value(buf, value_pos, 1)
        body_kind = code if code in (DATA, AMQP_SEQUENCE, AMQP_VALUE) else None
        if body_kind is not None and seen & ({DATA, AMQP_SEQUENCE, AMQP_VALUE} - {body_kind}):
            raise DecodeError("a message body mixes data, amqp-sequence and amqp-value sections")
        if code in seen and code not in (DATA, AMQP_SEQUENCE):
            raise DecodeError(f"message section {code:#x} appears twice")
        seen.add(code)
        if code == HEADER:
            m.header = Header.from_fields(value)
        elif code == PROPERTIES:
            m.properties = Properties.from_fields(value)
        elif code == DATA:
            data_body.append(_expect(value, bytes, "a data"))
        elif code == AMQP_SEQUENCE:
            sequences.append(_expect(value, list, "an amqp-sequence"))
        elif code == AMQP_VALUE:
            m.body = AmqpValue(value)
        else:
            name = {DELIVERY_ANNOTATIONS: "delivery_annotations", FOOTER: "footer",
                    MESSAGE_ANNOTATIONS: "message_annotations",
                    APPLICATION_PROPERTIES: "application_properties"}[code]  # fmt: skip
            setattr(m, name, _expect(value, (dict, type(None)), f"an {name}"))
    if sequences:
        m.body = AmqpSequence(sequences)
    elif DATA in seen:
        m.body = data_body
    return m


def with_message_annotations(
    data: bytes | bytearray | memoryview, annotations: dict[Any, Any]
) -> bytes:
    """Return the message with ``annotations`` merged into its message-annotations section.

    Given keys override existing ones (``str`` keys become symbols); the section is placed in
    spec order, after header and delivery-annotations. Every other section is copied byte for
    byte, never re-encoded.

    Raises:
        DecodeError: ``data`` is not a valid message, or its message-annotations is not a map.
    """
    before: list[bytes] = []
    after: list[bytes] = []
    merged: dict[Any, Any] | None = None
    for code, raw in split_sections(data):
        if code == MESSAGE_ANNOTATIONS:
            if merged is not None:
                raise DecodeError(f"message section {code:#x} appears twice")
            existing = _decoding.decode_value(raw, 0, 0)[0].value
            merged = dict(_expect(existing, (dict, type(None)), "a message-annotations") or {})
        elif code in (HEADER, DELIVERY_ANNOTATIONS):
            before.append(raw)
        else:
            after.append(raw)
    merged = {**(merged or {}), **_annotations(annotations)}
    return b"".join([*before, encode(_section(MESSAGE_ANNOTATIONS, merged)), *after])


def unpack_batch(data: bytes | bytearray | memoryview) -> list[bytes]:
    """Return the inner encoded messages of a batch (message-format `BATCH_MESSAGE_FORMAT`).

    The batch envelope's own sections (its message-annotations carry ``x-opt-partition-key``)
    are read with `decode_message`.

    Raises:
        DecodeError: malformed bytes, or a body that is not data sections.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    inner = []
    for code, _, value_pos in _read_sections(buf):
        if code in (AMQP_SEQUENCE, AMQP_VALUE):
            raise DecodeError("a batch body must be data sections")
        if code == DATA:
            inner.append(_expect(_decoding.decode_value(buf, value_pos, 1)[0], bytes, "a data"))
    return inner
