"""AMQP 1.0 framing (part 2.3): protocol headers, frame encoding, a streaming frame reader.

A frame is an 8-byte header (size, data offset in 4-byte words, type, channel) and a body: one
performative and, for a transfer, the message bytes after it. We always write a data offset of 2
(no extended header) because the azure-eventhub SDK ignores the offset and decodes the body at
byte 8; we accept any valid offset when reading.

Example:
    >>> from local.eventhubs.amqp.performatives import Close
    >>> reader = FrameReader(max_frame_size=512)
    >>> frames = reader.feed(encode_frame(0, Close()))
    >>> frames[0].body
    Close(error=None)
"""

from __future__ import annotations

import dataclasses
import struct
from dataclasses import dataclass

from local.eventhubs.amqp.performatives import (
    AMQP_PERFORMATIVES,
    SASL_PERFORMATIVES,
    Performative,
    Transfer,
    decode_performative,
    encode_performative,
)
from local.eventhubs.amqp.types import DecodeError, EncodeError

__all__ = [
    "AMQP_HEADER",
    "FRAME_AMQP",
    "FRAME_SASL",
    "MIN_MAX_FRAME_SIZE",
    "SASL_HEADER",
    "Frame",
    "FrameError",
    "FrameReader",
    "ProtocolHeader",
    "encode_frame",
    "split_transfers",
]

AMQP_HEADER = b"AMQP\x00\x01\x00\x00"
"""Protocol header opening plain AMQP 1.0 (after SASL, or without it)."""
SASL_HEADER = b"AMQP\x03\x01\x00\x00"
"""Protocol header opening the SASL layer (the SDK sends this first)."""
FRAME_AMQP, FRAME_SASL = 0, 1
MIN_MAX_FRAME_SIZE = 512
"""Every peer must accept frames this large; the limit before Open has been exchanged."""

_HEAD = struct.Struct(">IBBH")


class FrameError(DecodeError):
    """The byte stream does not hold a valid frame (too large, malformed, wrong body)."""


@dataclass(frozen=True)
class Frame:
    """One frame read from the stream.

    Attributes:
        channel: The session channel (0 for SASL frames).
        frame_type: `FRAME_AMQP` (0) or `FRAME_SASL` (1).
        body: The performative, or None for an empty frame (a heartbeat).
        payload: The bytes after a `Transfer` (a message or a fragment of one); otherwise b"".
    """

    channel: int
    frame_type: int
    body: Performative | None
    payload: bytes = b""


@dataclass(frozen=True)
class ProtocolHeader:
    """An 8-byte protocol header met in the stream (only with ``protocol_headers=True``)."""

    data: bytes


class FrameReader:
    """Cuts a byte stream into frames, however the bytes are split across reads.

    ``max_frame_size`` is the limit we announced (update it after Open); a larger frame is an
    error before any of it is buffered beyond its header. After a `FrameError` the stream is
    unusable: close the connection.

    With ``protocol_headers=True`` an ``AMQP...`` header where a frame would start comes back as a
    `ProtocolHeader` item, so one reader can follow the SASL → AMQP switch without losing bytes
    that arrived together; otherwise such a header is a `FrameError`.
    """

    def __init__(self, max_frame_size: int, *, protocol_headers: bool = False) -> None:
        self.max_frame_size = max_frame_size
        self.protocol_headers = protocol_headers
        self._buf = bytearray()

    @property
    def buffered(self) -> bytes:
        """The bytes received but not yet part of a complete frame."""
        return bytes(self._buf)

    def feed(self, data: bytes | bytearray | memoryview) -> list[Frame | ProtocolHeader]:
        """Add received bytes; return every frame (or header) now complete, in order.

        Raises:
            FrameError: a frame is larger than ``max_frame_size``, has an invalid header, or its
                body is not a valid performative of its frame type.
        """
        buf = self._buf
        buf += data
        out: list[Frame | ProtocolHeader] = []
        pos = 0
        try:
            while len(buf) - pos >= 8:
                if buf[pos : pos + 4] == b"AMQP":
                    if not self.protocol_headers:
                        raise FrameError("a protocol header arrived where a frame was expected")
                    out.append(ProtocolHeader(bytes(buf[pos : pos + 8])))
                    pos += 8
                    continue
                size, doff, frame_type, channel = _HEAD.unpack_from(buf, pos)
                self._check_header(size, doff, frame_type)
                if len(buf) - pos < size:
                    break
                with memoryview(buf) as view:
                    body = bytes(view[pos + 4 * doff : pos + size])
                pos += size
                out.append(_frame(channel, frame_type, body))
        finally:
            del buf[:pos]
        return out

    def _check_header(self, size: int, doff: int, frame_type: int) -> None:
        if size > self.max_frame_size:
            raise FrameError(f"frame of {size} bytes exceeds max-frame-size {self.max_frame_size}")
        if size < 8 or doff < 2 or 4 * doff > size:
            raise FrameError(f"invalid frame header: size {size}, data offset {doff}")
        if frame_type not in (FRAME_AMQP, FRAME_SASL):
            raise FrameError(f"unknown frame type {frame_type}")


def _frame(channel: int, frame_type: int, body: bytes) -> Frame:
    if not body:
        return Frame(channel, frame_type, None)
    try:
        performative, end = decode_performative(body)
    except DecodeError as exc:
        raise FrameError(f"bad frame body on channel {channel}: {exc}") from exc
    allowed = AMQP_PERFORMATIVES if frame_type == FRAME_AMQP else SASL_PERFORMATIVES
    if not isinstance(performative, allowed):
        kind = "an AMQP" if frame_type == FRAME_AMQP else "a SASL"
        raise FrameError(f"{type(performative).__name__} cannot travel in {kind} frame")
    if end < len(body) and not isinstance(performative, Transfer):
        raise FrameError(f"{len(body) - end} stray bytes after {type(performative).__name__}")
    return Frame(channel, frame_type, performative, body[end:])


def encode_frame(
    channel: int,
    body: Performative | None,
    payload: bytes = b"",
    *,
    frame_type: int = FRAME_AMQP,
) -> bytes:
    """Encode one frame; ``body`` None makes an empty frame (a heartbeat).

    Raises:
        EncodeError: a payload without a `Transfer`, a body of the wrong frame type, or a
            channel or size out of range.
    """
    if body is None:
        if payload:
            raise EncodeError("an empty frame cannot carry a payload")
        return _header(8, frame_type, channel)
    allowed = AMQP_PERFORMATIVES if frame_type == FRAME_AMQP else SASL_PERFORMATIVES
    if frame_type not in (FRAME_AMQP, FRAME_SASL) or not isinstance(body, allowed):
        raise EncodeError(f"{type(body).__name__} cannot travel in a frame of type {frame_type}")
    if payload and not isinstance(body, Transfer):
        raise EncodeError(f"only a Transfer carries a payload, not {type(body).__name__}")
    performative = encode_performative(body)
    size = 8 + len(performative) + len(payload)
    return b"".join((_header(size, frame_type, channel), performative, payload))


def _header(size: int, frame_type: int, channel: int) -> bytes:
    try:
        return _HEAD.pack(size, 2, frame_type, channel)
    except struct.error as exc:
        raise EncodeError(f"frame header out of range: size {size}, channel {channel}") from exc


def split_transfers(
    channel: int, transfer: Transfer, payload: bytes, max_frame_size: int
) -> list[bytes]:
    """Encode a delivery as as many transfer frames as ``max_frame_size`` requires.

    The first frame carries the delivery id, tag and message format; continuations carry only
    the handle and ``settled`` (the SDK reads ``settled`` from the *last* frame). ``more`` is True
    on all frames but the last, which keeps ``transfer.more``.

    Raises:
        EncodeError: ``max_frame_size`` leaves no room for any payload.
    """
    single = encode_frame(channel, transfer, payload)
    if len(single) <= max_frame_size:
        return [single]
    first = encode_performative(dataclasses.replace(transfer, more=True))
    middle = Transfer(handle=transfer.handle, settled=transfer.settled, more=True)
    last = dataclasses.replace(middle, more=transfer.more)
    middle_bytes, last_bytes = encode_performative(middle), encode_performative(last)
    first_room = max_frame_size - 8 - len(first)
    room = max_frame_size - 8 - max(len(middle_bytes), len(last_bytes))
    if first_room <= 0 or room <= 0:
        raise EncodeError(f"max-frame-size {max_frame_size} leaves no room for transfer payload")
    view = memoryview(payload)
    frames = [_transfer_frame(channel, first, view[:first_room])]
    for start in range(first_room, len(payload), room):
        perf = last_bytes if start + room >= len(payload) else middle_bytes
        frames.append(_transfer_frame(channel, perf, view[start : start + room]))
    return frames


def _transfer_frame(channel: int, performative: bytes, chunk: memoryview) -> bytes:
    return b"".join((_header(8 + len(performative) + len(chunk), 0, channel), performative, chunk))
