r"""The AMQP 1.0 type system (OASIS AMQP 1.0, part 1): typed values, an encoder, a strict decoder.

AMQP distinguishes types that Python merges, and peers care (the azure-eventhub SDK expects a
handle to be a uint and an offset to be a string), so each such type has a wrapper that is still an
``int``/``str``/``float``/``bytes`` to the rest of the code: `UByte`, `UShort`, `UInt`, `ULong`,
`Byte`, `Short`, `Int`, `Long`, `Timestamp`, `Float`, `Symbol`, `Char`, `Decimal32/64/128`, plus
`Described` and `Array`. The decoder returns wrappers, so what it reads re-encodes to the same
AMQP types.

Plain Python values map as: ``None`` → null, ``bool`` → boolean, ``int`` → long, ``float`` → double,
``str`` → string, ``bytes`` → binary, ``uuid.UUID`` → uuid, ``list``/``tuple`` → list,
``dict`` → map. Use a wrapper for any other width.

The implementation is split for size: `_values` (the classes and errors), `_encoding` and
`_decoding`; this module is the one to import.

Example:
    >>> encode(UInt(5))
    b'R\x05'
    >>> decode(encode({Symbol("k"): [1, "a"]}))
    ({Symbol('k'): [Long(1), 'a']}, 14)
"""

from __future__ import annotations

from typing import Any

from local.eventhubs.amqp import _decoding
from local.eventhubs.amqp._encoding import encode, encode_into
from local.eventhubs.amqp._values import (
    Array,
    Byte,
    Char,
    CodecError,
    Decimal32,
    Decimal64,
    Decimal128,
    DecodeError,
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
)

__all__ = [
    "MAX_DEPTH",
    "Array",
    "Byte",
    "Char",
    "CodecError",
    "Decimal32",
    "Decimal64",
    "Decimal128",
    "DecodeError",
    "Described",
    "EncodeError",
    "Float",
    "Int",
    "Long",
    "Short",
    "Symbol",
    "Timestamp",
    "UByte",
    "UInt",
    "ULong",
    "UShort",
    "decode",
    "encode",
    "encode_into",
    "skip_value",
]

MAX_DEPTH = _decoding.MAX_DEPTH


def decode(data: bytes | bytearray | memoryview, pos: int = 0) -> tuple[Any, int]:
    """Decode the AMQP value at ``pos``; return it and the position just after it.

    Integers come back as their wrappers (``UInt``, ``Long``, ...), symbols as `Symbol`, strings as
    ``str``, binary as ``bytes``, maps as ``dict``, lists as ``list``, arrays as `Array`, described
    values as `Described`.

    Raises:
        DecodeError: the bytes are truncated or malformed. Nothing else escapes: declared sizes
            are checked before allocation and nesting is bounded by `MAX_DEPTH`.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    return _decoding.decode_value(buf, pos, 0)


def skip_value(data: bytes | bytearray | memoryview, pos: int = 0) -> int:
    """Return the position just after the AMQP value at ``pos``, without decoding it.

    This is how a message is cut into sections cheaply; a compound value's contents are not
    checked, only that its declared size fits the bytes.

    Raises:
        DecodeError: the constructor is unknown or the declared size overruns the bytes.
    """
    buf = data if isinstance(data, bytes) else bytes(data)
    return _decoding.skip_value(buf, pos, 0)
