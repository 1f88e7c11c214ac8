"""AMQP 1.0 decoder: strict and safe, because its input comes from the network.

Every read is bounds-checked and fails as `DecodeError`; a declared size or count is checked
against the bytes actually present before anything is built, so a small frame cannot make us
allocate a large list; nesting is limited to `MAX_DEPTH`. The public face is
`local.eventhubs.amqp.types`.
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
    DecodeError,
    Described,
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
)

__all__ = ["MAX_DEPTH", "decode_value", "skip_value"]

MAX_DEPTH = 64
"""Deepest nesting of described/compound values we accept; real AMQP traffic nests < 10 deep."""

# A body decoder reads the value after its constructor byte: (data, pos, depth) -> (value, end).
_Body = Callable[[bytes, int, int], tuple[Any, int]]


def _need(data: bytes, pos: int, n: int, what: str) -> int:
    end = pos + n
    if end > len(data):
        raise DecodeError(f"truncated {what}: needs {n} bytes at offset {pos}, {len(data)} in all")
    return end


def _trusted(cls: type) -> Callable[[Any], Any]:
    """Build a wrapper without its range check: the wire width already bounds the value."""
    if issubclass(cls, int) and cls is not int:
        return lambda v: int.__new__(cls, v)
    return cls


def _fixed(fmt: str, wrap: Callable[[Any], Any], what: str) -> _Body:
    unpack_from, size, make = struct.Struct(fmt).unpack_from, struct.calcsize(fmt), _trusted(wrap)

    def body(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
        end = pos + size
        if end > len(data):
            _need(data, pos, size, what)
        return make(unpack_from(data, pos)[0]), end

    return body


def _const(make: Callable[[], Any]) -> _Body:
    return lambda data, pos, depth: (make(), pos)


def _boolean(data: bytes, pos: int, depth: int) -> tuple[bool, int]:
    end = _need(data, pos, 1, "boolean")
    if data[pos] > 1:
        raise DecodeError(f"boolean byte must be 0 or 1, not {data[pos]} at offset {pos}")
    return data[pos] == 1, end


def _char(data: bytes, pos: int, depth: int) -> tuple[Char, int]:
    end = _need(data, pos, 4, "char")
    code = int.from_bytes(data[pos:end], "big")
    if code > 0x10FFFF or 0xD800 <= code <= 0xDFFF:
        raise DecodeError(f"char is not a Unicode code point: {code:#x}")
    return Char(chr(code)), end


def _raw(width: int, wrap: Callable[[bytes], Any], what: str) -> _Body:
    def body(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
        end = _need(data, pos, width, what)
        return wrap(data[pos:end]), end

    return body


def _variable(len_width: int, convert: Callable[[bytes], Any], what: str) -> _Body:
    def body(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
        start = pos + len_width
        if start > len(data):
            _need(data, pos, len_width, what + " length")
        end = start + (data[pos] if len_width == 1 else int.from_bytes(data[pos:start], "big"))
        if end > len(data):
            _need(data, start, end - start, what)
        try:
            return convert(data[start:end]), end
        except UnicodeDecodeError as exc:
            raise DecodeError(f"invalid {what} at offset {start}: {exc.reason}") from exc

    return body


def _header(data: bytes, pos: int, width: int, what: str) -> tuple[int, int, int, int]:
    """Read a compound's size and count; return (size, count, first item pos, end pos)."""
    after = _need(data, pos, 2 * width, what + " header")
    size = int.from_bytes(data[pos : pos + width], "big")
    count = int.from_bytes(data[pos + width : after], "big")
    if size < width:
        raise DecodeError(f"{what} size {size} cannot hold its count at offset {pos}")
    end = _need(data, pos + width, size, what)
    return size, count, after, end


def _check_end(pos: int, end: int, what: str) -> None:
    if pos != end:
        raise DecodeError(f"{what} contents end at offset {pos}, its size says {end}")


def _list(width: int) -> _Body:
    def body(data: bytes, pos: int, depth: int) -> tuple[list[Any], int]:
        _, count, pos, end = _header(data, pos, width, "list")
        if count > end - pos:  # every item takes at least its constructor byte
            raise DecodeError(f"list declares {count} items in {end - pos} bytes")
        items = []
        for _ in range(count):
            item, pos = decode_value(data, pos, depth + 1)
            items.append(item)
        _check_end(pos, end, "list")
        return items, end

    return body


def _map(width: int) -> _Body:
    def body(data: bytes, pos: int, depth: int) -> tuple[dict[Any, Any], int]:
        _, count, pos, end = _header(data, pos, width, "map")
        if count % 2 or count > end - pos:
            raise DecodeError(f"map declares {count} keys and values in {end - pos} bytes")
        result: dict[Any, Any] = {}
        for _ in range(count // 2):
            key, pos = decode_value(data, pos, depth + 1)
            value, pos = decode_value(data, pos, depth + 1)
            try:
                if key in result:
                    raise DecodeError(f"map repeats the key {key!r}")
                result[key] = value
            except TypeError as exc:
                raise DecodeError(f"map key of type {type(key).__name__} is unhashable") from exc
        _check_end(pos, end, "map")
        return result, end

    return body


def _element_reader(data: bytes, pos: int, depth: int) -> tuple[_Body, type, bool, int]:
    """Read an array's element constructor: (body decoder, element kind, zero-width?, next pos)."""
    _need(data, pos, 1, "array element constructor")
    code = data[pos]
    if code == 0x00:
        descriptor, pos = _descriptor(data, pos + 1, depth)
        inner, _, zero, pos = _element_reader(data, pos, depth + 1)

        def described(d: bytes, p: int, dp: int) -> tuple[Described, int]:
            value, p = inner(d, p, dp)
            return Described(descriptor, value), p

        return described, Described, zero, pos
    body = _BODIES[code]
    if body is None:
        raise DecodeError(f"unknown array element constructor {code:#04x} at offset {pos}")
    return body, _KIND_OF_CODE[code], code in _ZERO_WIDTH, pos + 1


def _array(width: int) -> _Body:
    def body(data: bytes, pos: int, depth: int) -> tuple[Array, int]:
        _, count, pos, end = _header(data, pos, width, "array")
        element, kind, zero_width, pos = _element_reader(data, pos, depth + 1)
        # Zero-width elements (null, true, uint0, ...) take no bytes, so bound them by the input.
        limit = len(data) if zero_width else end - pos
        if count > limit:
            raise DecodeError(f"array declares {count} items in {end - pos} bytes")
        items = []
        for _ in range(count):
            item, pos = element(data, pos, depth + 1)
            items.append(item)
        _check_end(pos, end, "array")
        return Array(items, kind), end

    return body


def _descriptor(data: bytes, pos: int, depth: int) -> tuple[ULong | Symbol, int]:
    descriptor, pos = decode_value(data, pos, depth + 1)
    if not isinstance(descriptor, ULong | Symbol):
        raise DecodeError(f"descriptor must be a ulong or a symbol, not {descriptor!r}")
    return descriptor, pos


def _described(data: bytes, pos: int, depth: int) -> tuple[Described, int]:
    descriptor, pos = _descriptor(data, pos, depth)
    value, pos = decode_value(data, pos, depth + 1)
    return Described(descriptor, value), pos


def _symbol(raw: bytes) -> Symbol:
    return str.__new__(Symbol, raw.decode("ascii"))  # ASCII already checked by the decode


_BODIES: list[_Body | None] = [None] * 256
_KIND_OF_CODE: dict[int, type] = {}
_ZERO_WIDTH = frozenset({0x40, 0x41, 0x42, 0x43, 0x44, 0x45})
for _code, _kind, _body in (
    (0x00, Described, _described),
    (0x40, type(None), _const(lambda: None)),
    (0x41, bool, _const(lambda: True)),
    (0x42, bool, _const(lambda: False)),
    (0x56, bool, _boolean),
    (0x50, UByte, _fixed(">B", UByte, "ubyte")),
    (0x60, UShort, _fixed(">H", UShort, "ushort")),
    (0x43, UInt, _const(lambda: UInt(0))),
    (0x52, UInt, _fixed(">B", UInt, "smalluint")),
    (0x70, UInt, _fixed(">I", UInt, "uint")),
    (0x44, ULong, _const(lambda: ULong(0))),
    (0x53, ULong, _fixed(">B", ULong, "smallulong")),
    (0x80, ULong, _fixed(">Q", ULong, "ulong")),
    (0x51, Byte, _fixed(">b", Byte, "byte")),
    (0x61, Short, _fixed(">h", Short, "short")),
    (0x54, Int, _fixed(">b", Int, "smallint")),
    (0x71, Int, _fixed(">i", Int, "int")),
    (0x55, Long, _fixed(">b", Long, "smalllong")),
    (0x81, Long, _fixed(">q", Long, "long")),
    (0x72, Float, _fixed(">f", Float, "float")),
    (0x82, float, _fixed(">d", float, "double")),
    (0x83, Timestamp, _fixed(">q", Timestamp, "timestamp")),
    (0x73, Char, _char),
    (0x74, Decimal32, _raw(4, Decimal32, "decimal32")),
    (0x84, Decimal64, _raw(8, Decimal64, "decimal64")),
    (0x94, Decimal128, _raw(16, Decimal128, "decimal128")),
    (0x98, uuid.UUID, _raw(16, lambda raw: uuid.UUID(bytes=raw), "uuid")),
    (0xA0, bytes, _variable(1, bytes, "vbin8")),
    (0xB0, bytes, _variable(4, bytes, "vbin32")),
    (0xA1, str, _variable(1, lambda raw: raw.decode("utf-8"), "str8")),
    (0xB1, str, _variable(4, lambda raw: raw.decode("utf-8"), "str32")),
    (0xA3, Symbol, _variable(1, _symbol, "sym8")),
    (0xB3, Symbol, _variable(4, _symbol, "sym32")),
    (0x45, list, _const(list)),
    (0xC0, list, _list(1)),
    (0xD0, list, _list(4)),
    (0xC1, dict, _map(1)),
    (0xD1, dict, _map(4)),
    (0xE0, Array, _array(1)),
    (0xF0, Array, _array(4)),
):
    _BODIES[_code] = _body
    _KIND_OF_CODE[_code] = _kind


def decode_value(data: bytes, pos: int, depth: int) -> tuple[Any, int]:
    """Decode the value whose constructor is at ``pos``; see `local.eventhubs.amqp.types.decode`."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"values nested deeper than {MAX_DEPTH} levels")
    if not 0 <= pos < len(data):
        raise DecodeError(f"no value at offset {pos}: {len(data)} bytes in all")
    body = _BODIES[data[pos]]
    if body is None:
        raise DecodeError(f"unknown constructor {data[pos]:#04x} at offset {pos}")
    return body(data, pos + 1, depth)


# Widths of fixed-size values by constructor; others carry a 1- or 4-byte size or length.
_FIXED_WIDTH = {c: 0 for c in _ZERO_WIDTH}
_FIXED_WIDTH.update({c: 1 for c in (0x50, 0x51, 0x52, 0x53, 0x54, 0x55, 0x56)})
_FIXED_WIDTH.update({0x60: 2, 0x61: 2, 0x70: 4, 0x71: 4, 0x72: 4, 0x73: 4, 0x74: 4})
_FIXED_WIDTH.update({0x80: 8, 0x81: 8, 0x82: 8, 0x83: 8, 0x84: 8, 0x94: 16, 0x98: 16})
_SIZE_WIDTH = {c: 1 for c in (0xA0, 0xA1, 0xA3, 0xC0, 0xC1, 0xE0)}
_SIZE_WIDTH.update({c: 4 for c in (0xB0, 0xB1, 0xB3, 0xD0, 0xD1, 0xF0)})


def skip_value(data: bytes, pos: int, depth: int) -> int:
    """Return the end of the value at ``pos`` using only its constructor and declared size."""
    if depth > MAX_DEPTH:
        raise DecodeError(f"values nested deeper than {MAX_DEPTH} levels")
    end = _need(data, pos, 1, "constructor")
    code = data[pos]
    if code == 0x00:
        return skip_value(data, skip_value(data, end, depth + 1), depth + 1)
    if code in _FIXED_WIDTH:
        return _need(data, end, _FIXED_WIDTH[code], "value")
    width = _SIZE_WIDTH.get(code)
    if width is None:
        raise DecodeError(f"unknown constructor {code:#04x} at offset {pos}")
    start = _need(data, end, width, "size")
    return _need(data, start, int.from_bytes(data[end:start], "big"), "value")
