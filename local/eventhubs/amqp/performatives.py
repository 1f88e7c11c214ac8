"""AMQP 1.0 frame bodies (part 2), terminus and delivery-state types (parts 2-3) and SASL (part 5).

Each is a frozen dataclass with every field in spec order and the spec's defaults. The field types
are the spec's: a constructed object may hold plain Python values (``handle=0``), which
`encode_performative` converts (``UInt``), while a decoded one holds the wire types.

Why every field is written, trailing nulls included: the azure-eventhub SDK reads performative
fields *by position* (``frame[5]`` is an attach's source, ``frame[11]`` a transfer's payload), so a
shortened list breaks it. Other peers (proton) do shorten lists, so decoding accepts fewer fields
and fills in the defaults; a null field also means its default.

Multi-valued symbol fields (capabilities, locales, SASL mechanisms, outcomes) decode to a tuple of
`Symbol` whether they came as one symbol or an array, and encode from a ``str``, a sequence of
``str`` or an `Array` - always as an array, which the SDK reads as a list.

Example:
    >>> p, _ = decode_performative(encode_performative(Detach(handle=1, closed=True)))
    >>> p
    Detach(handle=UInt(1), closed=True, error=None)
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

from local.eventhubs.amqp._composite import (
    ANNOTATIONS,
    BINARY,
    BOOL,
    FIELDS,
    MAP,
    REGISTRY,
    STRING,
    SYMBOL,
    SYMBOLS,
    UBYTE,
    UINT,
    ULONG,
    USHORT,
    Composite,
    Kind,
    composite_kind,
    described_list,
    from_described,
    opt,
    req,
)
from local.eventhubs.amqp.types import (
    DecodeError,
    Described,
    Symbol,
    UByte,
    UInt,
    UShort,
    decode,
    encode,
)

__all__ = [
    "AMQP_PERFORMATIVES",
    "SASL_PERFORMATIVES",
    "Accepted",
    "Attach",
    "Begin",
    "Close",
    "DeliveryState",
    "Detach",
    "Disposition",
    "End",
    "Error",
    "Flow",
    "Modified",
    "Open",
    "Performative",
    "Received",
    "Rejected",
    "Released",
    "SASLChallenge",
    "SASLInit",
    "SASLMechanisms",
    "SASLOutcome",
    "SASLResponse",
    "Source",
    "Target",
    "Transfer",
    "decode_performative",
    "encode_performative",
    "from_described",
]


@described_list(0x1D, "amqp:error:list")
@dataclass(frozen=True)
class Error(Composite):
    """An error: condition symbol (``amqp:not-found``), text, and extra info."""

    condition: str = field(metadata=req(SYMBOL))
    description: str | None = field(default=None, metadata=opt(STRING))
    info: dict[Any, Any] | None = field(default=None, metadata=opt(FIELDS))


_ERROR_KIND = composite_kind("an error", Error)


@described_list(0x23, "amqp:received:list")
@dataclass(frozen=True)
class Received(Composite):
    """Delivery state: how much of a message has arrived (for resuming)."""

    section_number: int = field(metadata=req(UINT))
    section_offset: int = field(metadata=req(ULONG))


@described_list(0x24, "amqp:accepted:list")
@dataclass(frozen=True)
class Accepted(Composite):
    """Outcome: the message was processed."""


@described_list(0x25, "amqp:rejected:list")
@dataclass(frozen=True)
class Rejected(Composite):
    """Outcome: the message is invalid; ``error`` says why."""

    error: Error | None = field(default=None, metadata=opt(_ERROR_KIND))


@described_list(0x26, "amqp:released:list")
@dataclass(frozen=True)
class Released(Composite):
    """Outcome: the message was not processed and may be delivered again."""


@described_list(0x27, "amqp:modified:list")
@dataclass(frozen=True)
class Modified(Composite):
    """Outcome: released, with changes to apply before redelivery."""

    delivery_failed: bool | None = field(default=None, metadata=opt(BOOL))
    undeliverable_here: bool | None = field(default=None, metadata=opt(BOOL))
    message_annotations: dict[Any, Any] | None = field(default=None, metadata=opt(ANNOTATIONS))


DeliveryState = Received | Accepted | Rejected | Released | Modified
_STATE_KIND = composite_kind(
    "a delivery state", Received, Accepted, Rejected, Released, Modified, keep_unknown=True
)
_SESSION_END = Symbol("session-end")


def _unsettled_from_wire(v: Any) -> dict[Any, Any]:
    states = MAP.from_wire(v)
    return {tag: None if s is None else _STATE_KIND.from_wire(s) for tag, s in states.items()}


# delivery-tag -> delivery-state of the deliveries a link resumes with
_UNSETTLED_KIND = Kind("an unsettled map", MAP.to_wire, _unsettled_from_wire)


@described_list(0x28, "amqp:source:list")
@dataclass(frozen=True)
class Source(Composite):
    """Where a link's messages come from; ``filter`` carries Event Hubs' selector filter."""

    address: str | None = field(default=None, metadata=opt(STRING))
    durable: int = field(default=UInt(0), metadata=opt(UINT))
    expiry_policy: str = field(default=_SESSION_END, metadata=opt(SYMBOL))
    timeout: int = field(default=UInt(0), metadata=opt(UINT))
    dynamic: bool = field(default=False, metadata=opt(BOOL))
    dynamic_node_properties: dict[Any, Any] | None = field(default=None, metadata=opt(FIELDS))
    distribution_mode: str | None = field(default=None, metadata=opt(SYMBOL))
    filter: dict[Any, Any] | None = field(default=None, metadata=opt(FIELDS))
    default_outcome: DeliveryState | Described | None = field(
        default=None, metadata=opt(_STATE_KIND)
    )
    outcomes: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    capabilities: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))


@described_list(0x29, "amqp:target:list")
@dataclass(frozen=True)
class Target(Composite):
    """Where a link's messages go."""

    address: str | None = field(default=None, metadata=opt(STRING))
    durable: int = field(default=UInt(0), metadata=opt(UINT))
    expiry_policy: str = field(default=_SESSION_END, metadata=opt(SYMBOL))
    timeout: int = field(default=UInt(0), metadata=opt(UINT))
    dynamic: bool = field(default=False, metadata=opt(BOOL))
    dynamic_node_properties: dict[Any, Any] | None = field(default=None, metadata=opt(FIELDS))
    capabilities: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))


@described_list(0x10, "amqp:open:list")
@dataclass(frozen=True)
class Open(Composite):
    """Connection open: limits (frame size, channels, idle time-out in ms) and properties."""

    container_id: str = field(metadata=req(STRING))
    hostname: str | None = field(default=None, metadata=opt(STRING))
    max_frame_size: int = field(default=UInt(4294967295), metadata=opt(UINT))
    channel_max: int = field(default=UShort(65535), metadata=opt(USHORT))
    idle_time_out: int | None = field(default=None, metadata=opt(UINT))
    outgoing_locales: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    incoming_locales: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    offered_capabilities: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    desired_capabilities: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    properties: dict[Any, Any] | None = field(default=None, metadata=opt(FIELDS))


@described_list(0x11, "amqp:begin:list")
@dataclass(frozen=True, kw_only=True)
class Begin(Composite):
    """Session begin. Keyword-only: the optional remote-channel precedes mandatory fields."""

    remote_channel: int | None = field(default=None, metadata=opt(USHORT))
    next_outgoing_id: int = field(metadata=req(UINT))
    incoming_window: int = field(metadata=req(UINT))
    outgoing_window: int = field(metadata=req(UINT))
    handle_max: int = field(default=UInt(4294967295), metadata=opt(UINT))
    offered_capabilities: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    desired_capabilities: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    properties: dict[Any, Any] | None = field(default=None, metadata=opt(FIELDS))


@described_list(0x12, "amqp:attach:list")
@dataclass(frozen=True)
class Attach(Composite):
    """Link attach. ``role`` False = sender, True = receiver; settle modes are ubytes."""

    name: str = field(metadata=req(STRING))
    handle: int = field(metadata=req(UINT))
    role: bool = field(metadata=req(BOOL))
    snd_settle_mode: int = field(default=UByte(2), metadata=opt(UBYTE))
    rcv_settle_mode: int = field(default=UByte(0), metadata=opt(UBYTE))
    source: Source | None = field(default=None, metadata=opt(composite_kind("a source", Source)))
    target: Target | None = field(default=None, metadata=opt(composite_kind("a target", Target)))
    unsettled: dict[Any, Any] | None = field(default=None, metadata=opt(_UNSETTLED_KIND))
    incomplete_unsettled: bool = field(default=False, metadata=opt(BOOL))
    initial_delivery_count: int | None = field(default=None, metadata=opt(UINT))
    max_message_size: int | None = field(default=None, metadata=opt(ULONG))
    offered_capabilities: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    desired_capabilities: Sequence[str] | None = field(default=None, metadata=opt(SYMBOLS))
    properties: dict[Any, Any] | None = field(default=None, metadata=opt(FIELDS))


@described_list(0x13, "amqp:flow:list")
@dataclass(frozen=True, kw_only=True)
class Flow(Composite):
    """Session and (with ``handle``) link flow control. Keyword-only, like `Begin`."""

    next_incoming_id: int | None = field(default=None, metadata=opt(UINT))
    incoming_window: int = field(metadata=req(UINT))
    next_outgoing_id: int = field(metadata=req(UINT))
    outgoing_window: int = field(metadata=req(UINT))
    handle: int | None = field(default=None, metadata=opt(UINT))
    delivery_count: int | None = field(default=None, metadata=opt(UINT))
    link_credit: int | None = field(default=None, metadata=opt(UINT))
    available: int | None = field(default=None, metadata=opt(UINT))
    drain: bool = field(default=False, metadata=opt(BOOL))
    echo: bool = field(default=False, metadata=opt(BOOL))
    properties: dict[Any, Any] | None = field(default=None, metadata=opt(FIELDS))


@described_list(0x14, "amqp:transfer:list")
@dataclass(frozen=True)
class Transfer(Composite):
    """A message frame; the message bytes follow it in the frame as payload.

    ``delivery_id``, ``delivery_tag`` (raw bytes) and ``message_format`` are set on the first
    frame of a delivery and None on continuations (``more`` is True on all but the last).
    """

    handle: int = field(metadata=req(UINT))
    delivery_id: int | None = field(default=None, metadata=opt(UINT))
    delivery_tag: bytes | None = field(default=None, metadata=opt(BINARY))
    message_format: int | None = field(default=None, metadata=opt(UINT))
    settled: bool | None = field(default=None, metadata=opt(BOOL))
    more: bool = field(default=False, metadata=opt(BOOL))
    rcv_settle_mode: int | None = field(default=None, metadata=opt(UBYTE))
    state: DeliveryState | Described | None = field(default=None, metadata=opt(_STATE_KIND))
    resume: bool = field(default=False, metadata=opt(BOOL))
    aborted: bool = field(default=False, metadata=opt(BOOL))
    batchable: bool = field(default=False, metadata=opt(BOOL))


@described_list(0x15, "amqp:disposition:list")
@dataclass(frozen=True)
class Disposition(Composite):
    """Settles or updates deliveries ``first``..``last`` (inclusive) sent by the other role."""

    role: bool = field(metadata=req(BOOL))
    first: int = field(metadata=req(UINT))
    last: int | None = field(default=None, metadata=opt(UINT))
    settled: bool = field(default=False, metadata=opt(BOOL))
    state: DeliveryState | Described | None = field(default=None, metadata=opt(_STATE_KIND))
    batchable: bool = field(default=False, metadata=opt(BOOL))


@described_list(0x16, "amqp:detach:list")
@dataclass(frozen=True)
class Detach(Composite):
    """Link detach (``closed`` True closes it for good)."""

    handle: int = field(metadata=req(UINT))
    closed: bool = field(default=False, metadata=opt(BOOL))
    error: Error | None = field(default=None, metadata=opt(_ERROR_KIND))


@described_list(0x17, "amqp:end:list")
@dataclass(frozen=True)
class End(Composite):
    """Session end."""

    error: Error | None = field(default=None, metadata=opt(_ERROR_KIND))


@described_list(0x18, "amqp:close:list")
@dataclass(frozen=True)
class Close(Composite):
    """Connection close."""

    error: Error | None = field(default=None, metadata=opt(_ERROR_KIND))


@described_list(0x40, "amqp:sasl-mechanisms:list")
@dataclass(frozen=True)
class SASLMechanisms(Composite):
    """SASL: the mechanisms the server offers (e.g. ``ANONYMOUS``)."""

    sasl_server_mechanisms: Sequence[str] = field(metadata=req(SYMBOLS))


@described_list(0x41, "amqp:sasl-init:list")
@dataclass(frozen=True)
class SASLInit(Composite):
    """SASL: the client's chosen mechanism and first response."""

    mechanism: str = field(metadata=req(SYMBOL))
    initial_response: bytes | None = field(default=None, metadata=opt(BINARY))
    hostname: str | None = field(default=None, metadata=opt(STRING))


@described_list(0x42, "amqp:sasl-challenge:list")
@dataclass(frozen=True)
class SASLChallenge(Composite):
    """SASL: a server challenge."""

    challenge: bytes = field(metadata=req(BINARY))


@described_list(0x43, "amqp:sasl-response:list")
@dataclass(frozen=True)
class SASLResponse(Composite):
    """SASL: the client's answer to a challenge."""

    response: bytes = field(metadata=req(BINARY))


@described_list(0x44, "amqp:sasl-outcome:list")
@dataclass(frozen=True)
class SASLOutcome(Composite):
    """SASL: the result; code 0 = ok, 1 = auth, 2 = sys, 3 = sys-perm, 4 = sys-temp."""

    code: int = field(metadata=req(UBYTE))
    additional_data: bytes | None = field(default=None, metadata=opt(BINARY))


AMQP_PERFORMATIVES = (Open, Begin, Attach, Flow, Transfer, Disposition, Detach, End, Close)
SASL_PERFORMATIVES = (SASLMechanisms, SASLInit, SASLChallenge, SASLResponse, SASLOutcome)
Performative = (
    Open | Begin | Attach | Flow | Transfer | Disposition | Detach | End | Close
    | SASLMechanisms | SASLInit | SASLChallenge | SASLResponse | SASLOutcome
)  # fmt: skip
_FRAME_BODIES = frozenset(AMQP_PERFORMATIVES + SASL_PERFORMATIVES)


def encode_performative(p: Performative) -> bytes:
    """Encode a performative as a described list with every field present.

    Raises:
        EncodeError: a mandatory field is missing or a value does not fit its field.
    """
    return encode(p.to_described())


def decode_performative(
    data: bytes | bytearray | memoryview, pos: int = 0
) -> tuple[Performative, int]:
    """Decode the performative at ``pos``; return it and the position after it (the payload).

    Raises:
        DecodeError: malformed bytes, or a described value that is not a frame body.
    """
    value, end = decode(data, pos)
    if not isinstance(value, Described):
        raise DecodeError(f"a frame body must be a described list, not {value!r}")
    cls = REGISTRY.get(value.descriptor)  # type: ignore[arg-type]
    if cls not in _FRAME_BODIES:
        raise DecodeError(f"unknown performative descriptor {value.descriptor!r}")
    return cls.from_fields(value.value), end  # type: ignore[union-attr, return-value]
