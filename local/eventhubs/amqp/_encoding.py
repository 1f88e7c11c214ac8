"""AMQP 1.0 encoder: values (plain Python or wrappers) to bytes, with the compact constructors.

Choices follow the spec's compact forms (``uint0``/``smalluint``, ``ulong0``/``smallulong``,
``smallint``/``smalllong``, ``str8``/``vbin8``/``sym8``, ``list0``/``list8``/``map8``/``array8``)
and, where the spec leaves a choice, what the azure-eventhub SDK itself writes, so that a message
the SDK produced re-encodes byte for byte. The public face is `local.eventhubs.amqp.types`.
"""

from __future__ import annotations

import struct
import uuid
from collections.abc import Callable
from typing import Any

from local.eventhubs.amqp._values import (
    Array,
    Byte,
    Char,
    Decimal32,
    Decimal64,
    Decimal128,
    Described,
    EncodeError,
    Float,
    Int,
    Long,
    Short,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
    kind_of,
)

__all__ = ["encode", "encode_into"]

_Encoder = Callable[[bytearray, Any], None]
_S_BB, _S_Bb, _S_BH, _S_Bh = (struct.Struct(f">B{c}") for c in ("B", "b", "H", "h"))
_S_BI, _S_Bi, _S_BQ, _S_Bq = (struct.Struct(f">B{c}") for c in ("I", "i", "Q", "q"))
_S_Bf, _S_Bd, _S_BII = struct.Struct(">Bf"), struct.Struct(">Bd"), struct.Struct(">BII")


def _small_or_large(
    zero: int | None, small: tuple[int, struct.Struct, int, int], large: tuple[int, struct.Struct]
) -> _Encoder:
    """An integer encoder: the zero-width form for 0 (if any), else a 1-byte form if it fits."""
    small_code, small_fmt, lo, hi = small
    large_code, large_fmt = large

    def enc(buf: bytearray, v: int) -> None:
        if v == 0 and zero is not None:
            buf.append(zero)
        elif lo <= v <= hi:
            buf += small_fmt.pack(small_code, v)
        else:
            buf += large_fmt.pack(large_code, v)

    return enc


def _fixed(code: int, fmt: struct.Struct) -> _Encoder:
    def enc(buf: bytearray, v: Any) -> None:
        buf += fmt.pack(code, v)

    return enc


def _variable(small: int, large: int, to_bytes: Callable[[Any], bytes]) -> _Encoder:
    """Length-prefixed bytes: the 1-byte length form when it fits, else the 4-byte one."""

    def enc(buf: bytearray, v: Any) -> None:
        try:
            raw = to_bytes(v)
        except UnicodeEncodeError as exc:
            raise EncodeError(f"cannot encode {v!r}: {exc.reason}") from exc
        n = len(raw)
        if n < 256:
            buf += bytes((small, n))
        elif n < 2**32:
            buf += _S_BI.pack(large, n)
        else:
            raise EncodeError(f"value too long for AMQP: {n} bytes")
        buf += raw

    return enc


def _compound(buf: bytearray, small: int, large: int, count: int, body: bytes | bytearray) -> None:
    """Write a list/map/array header (the size counts the count field too) and its body."""
    if count < 256 and len(body) < 255:
        buf += bytes((small, len(body) + 1, count))
    elif len(body) + 4 < 2**32:
        buf += _S_BII.pack(large, len(body) + 4, count)
    else:
        raise EncodeError(f"compound value too large for AMQP: {len(body)} bytes")
    buf += body


def _enc_list(buf: bytearray, v: list[Any] | tuple[Any, ...]) -> None:
    if not v:
        buf.append(0x45)
        return
    body = bytearray()
    for item in v:
        encode_into(body, item)
    _compound(buf, 0xC0, 0xD0, len(v), body)


def _enc_map(buf: bytearray, v: dict[Any, Any]) -> None:
    body = bytearray()
    for key, item in v.items():
        encode_into(body, key)
        encode_into(body, item)
    _compound(buf, 0xC1, 0xD1, 2 * len(v), body)


def _enc_described(buf: bytearray, v: Described) -> None:
    buf.append(0x00)
    encode_into(buf, v.descriptor)
    encode_into(buf, v.value)


def _enc_array(buf: bytearray, v: Array) -> None:
    _compound(buf, 0xE0, 0xF0, len(v.items), _array_body(v))


def _array_body(v: Array) -> bytes:
    assert v.element_type is not None  # Array.__post_init__ always sets it
    return _array_elements(v.element_type, v.items)


# Array element forms, per kind: (small code, small format, small range) or None, large code+format.
_NUMERIC: dict[type, tuple[tuple[int, str, int, int] | None, int, str]] = {
    UByte: (None, 0x50, "B"),
    UShort: (None, 0x60, "H"),
    UInt: ((0x52, "B", 0, 255), 0x70, "I"),
    ULong: ((0x53, "B", 0, 255), 0x80, "Q"),
    Byte: (None, 0x51, "b"),
    Short: (None, 0x61, "h"),
    Int: ((0x54, "b", -128, 127), 0x71, "i"),
    Long: ((0x55, "b", -128, 127), 0x81, "q"),
    Timestamp: (None, 0x83, "q"),
    Float: (None, 0x72, "f"),
    float: (None, 0x82, "d"),
}
_OPAQUE = {uuid.UUID: 0x98, Decimal32: 0x74, Decimal64: 0x84, Decimal128: 0x94}
_VARIABLE = {bytes: (0xA0, 0xB0), str: (0xA1, 0xB1), Symbol: (0xA3, 0xB3)}


def _array_elements(kind: type, items: list[Any]) -> bytes:
    """One constructor shared by every item, then each item without a constructor.

    The smallest constructor that fits *all* items is chosen (zero-width forms such as ``uint0``
    are avoided since one item in the array could not be zero).
    """
    n = len(items)
    if kind in _NUMERIC:
        small, code, fmt = _NUMERIC[kind]
        if small is not None and all(small[2] <= x <= small[3] for x in items):
            code, fmt = small[0], small[1]
        return bytes((code,)) + struct.pack(f">{n}{fmt}", *items)
    if kind is type(None):
        return b"\x40"
    if kind is bool:
        return b"\x56" + bytes(1 if x else 0 for x in items)
    if kind is Char:
        return b"\x73" + struct.pack(f">{n}I", *map(ord, items))
    if kind in _OPAQUE:
        raws = (x.bytes for x in items) if kind is uuid.UUID else items
        return bytes((_OPAQUE[kind],)) + b"".join(raws)
    if kind in _VARIABLE:
        small_code, large_code = _VARIABLE[kind]
        codec = "ascii" if kind is Symbol else "utf-8"
        raws = [bytes(x) if kind is bytes else x.encode(codec) for x in items]
        if all(len(r) < 256 for r in raws):
            return bytes((small_code,)) + b"".join(bytes((len(r),)) + r for r in raws)
        return bytes((large_code,)) + b"".join(struct.pack(">I", len(r)) + r for r in raws)
    if kind is Described:
        if not items or len({x.descriptor for x in items}) != 1:
            raise EncodeError("an Array of Described needs items sharing one descriptor")
        head = bytearray(b"\x00")
        encode_into(head, items[0].descriptor)
        values = [x.value for x in items]
        return bytes(head) + _array_elements(kind_of(values[0]), values)
    return _compound_elements(kind, items)


def _compound_elements(kind: type, items: list[Any]) -> bytes:
    """Lists, maps and arrays inside an array all take the 32-bit form, so one constructor fits."""
    out = bytearray((0xD0 if kind is list else 0xD1 if kind is dict else 0xF0,))
    for x in items:
        if kind is Array:
            body, count = _array_body(x), len(x.items)
        else:
            parts = [y for pair in x.items() for y in pair] if kind is dict else x
            body, count = bytearray(), len(parts)
            for part in parts:
                encode_into(body, part)
        out += struct.pack(">II", len(body) + 4, count) + body
    return bytes(out)


_long = _small_or_large(None, (0x55, _S_Bb, -128, 127), (0x81, _S_Bq))


def _enc_plain_int(buf: bytearray, v: int) -> None:
    if not -(2**63) <= v < 2**63:
        raise EncodeError(f"int out of range for an AMQP long: {v} (use ULong above 2**63 - 1)")
    _long(buf, v)


_ENCODERS: dict[type, _Encoder] = {
    type(None): lambda buf, v: buf.append(0x40),
    # The SDK writes every boolean as 0x56 0x01/0x00, never as 0x41/0x42; doing the same keeps an
    # SDK message byte-identical when we re-encode it (e.g. its header's durable=true).
    bool: lambda buf, v: buf.extend(b"\x56\x01" if v else b"\x56\x00"),
    UByte: _fixed(0x50, _S_BB),
    UShort: _fixed(0x60, _S_BH),
    UInt: _small_or_large(0x43, (0x52, _S_BB, 0, 255), (0x70, _S_BI)),
    ULong: _small_or_large(0x44, (0x53, _S_BB, 0, 255), (0x80, _S_BQ)),
    Byte: _fixed(0x51, _S_Bb),
    Short: _fixed(0x61, _S_Bh),
    Int: _small_or_large(None, (0x54, _S_Bb, -128, 127), (0x71, _S_Bi)),
    Long: _long,
    int: _enc_plain_int,
    Timestamp: _fixed(0x83, _S_Bq),
    Float: _fixed(0x72, _S_Bf),
    float: _fixed(0x82, _S_Bd),
    Char: lambda buf, v: buf.extend(_S_BI.pack(0x73, ord(v))),
    Decimal32: lambda buf, v: buf.extend(b"\x74" + v),
    Decimal64: lambda buf, v: buf.extend(b"\x84" + v),
    Decimal128: lambda buf, v: buf.extend(b"\x94" + v),
    uuid.UUID: lambda buf, v: buf.extend(b"\x98" + v.bytes),
    bytes: _variable(0xA0, 0xB0, bytes),
    bytearray: _variable(0xA0, 0xB0, bytes),
    memoryview: _variable(0xA0, 0xB0, bytes),
    str: _variable(0xA1, 0xB1, lambda v: v.encode("utf-8")),
    Symbol: _variable(0xA3, 0xB3, lambda v: v.encode("ascii")),
    list: _enc_list,
    tuple: _enc_list,
    dict: _enc_map,
    Described: _enc_described,
    Array: _enc_array,
}


def _enc_describable(buf: bytearray, v: Any) -> None:
    _enc_described(buf, v.to_described())


def _encoder_for(cls: type) -> _Encoder:
    """Find (and cache) the encoder of a subclass, or of an object that knows its `Described`."""
    enc = next((_ENCODERS[base] for base in cls.__mro__ if base in _ENCODERS), None)
    if enc is None:
        if not callable(getattr(cls, "to_described", None)):
            raise EncodeError(f"no AMQP type for {cls.__name__}")
        enc = _enc_describable
    _ENCODERS[cls] = enc
    return enc


def encode_into(buf: bytearray, value: Any) -> None:
    """Append the AMQP encoding of ``value`` to ``buf``, choosing the most compact constructor.

    Objects with a ``to_described()`` method (performatives, message sections) encode as the
    `Described` it returns.

    Raises:
        EncodeError: the value has no AMQP type or does not fit the one it asks for.
    """
    enc = _ENCODERS.get(type(value)) or _encoder_for(type(value))
    try:
        enc(buf, value)
    except struct.error as exc:
        raise EncodeError(f"cannot encode {value!r}: {exc}") from exc


def encode(value: Any) -> bytes:
    r"""Return the AMQP encoding of ``value`` (see `encode_into`).

    Example:
        >>> encode(UInt(5))
        b'R\x05'
    """
    buf = bytearray()
    encode_into(buf, value)
    return bytes(buf)
