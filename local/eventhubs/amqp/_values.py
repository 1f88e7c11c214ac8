"""AMQP 1.0 value classes: the types Python lacks, as thin wrappers, plus the codec's errors.

AMQP distinguishes types that Python merges (uint, ulong, int and long are all ``int``; symbol
and string are both ``str``), and peers care: the azure-eventhub SDK expects a handle to be a uint
and an offset to be a string. Each such type has a wrapper (``UInt(5)``, ``Symbol("x-opt-offset")``)
that stays an ``int``/``str`` for the rest of the code; the decoder returns them, so a decoded
value re-encodes to the same AMQP type. Arithmetic on a wrapper gives a plain ``int`` (a long) back.

The public face of this module is `local.eventhubs.amqp.types`.
"""

from __future__ import annotations

import struct
import uuid
from dataclasses import dataclass
from typing import Any, ClassVar, Self

__all__ = [
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
    "kind_of",
]


class CodecError(ValueError):
    """Root of the codec's errors: the bytes or the value do not make valid AMQP."""


class EncodeError(CodecError):
    """A value has no AMQP encoding (unsupported type, out of range, too long)."""


class DecodeError(CodecError):
    """Bytes are not valid AMQP: truncated, malformed, or exceeding a declared size."""


class _BoundedInt(int):
    """An ``int`` that remembers its AMQP width and refuses values outside it."""

    __slots__ = ()
    _min: ClassVar[int]
    _max: ClassVar[int]

    def __new__(cls, value: int = 0) -> Self:
        self = super().__new__(cls, value)
        if not cls._min <= self <= cls._max:
            raise ValueError(f"{cls.__name__} out of range: {int(self)}")
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({int(self)})"


class UByte(_BoundedInt):
    """AMQP ubyte: 8-bit unsigned integer (settle modes, SASL codes)."""

    __slots__ = ()
    _min, _max = 0, 2**8 - 1


class UShort(_BoundedInt):
    """AMQP ushort: 16-bit unsigned integer (channels)."""

    __slots__ = ()
    _min, _max = 0, 2**16 - 1


class UInt(_BoundedInt):
    """AMQP uint: 32-bit unsigned integer (handles, delivery ids, windows)."""

    __slots__ = ()
    _min, _max = 0, 2**32 - 1


class ULong(_BoundedInt):
    """AMQP ulong: 64-bit unsigned integer (descriptor codes, sizes)."""

    __slots__ = ()
    _min, _max = 0, 2**64 - 1


class Byte(_BoundedInt):
    """AMQP byte: 8-bit signed integer."""

    __slots__ = ()
    _min, _max = -(2**7), 2**7 - 1


class Short(_BoundedInt):
    """AMQP short: 16-bit signed integer."""

    __slots__ = ()
    _min, _max = -(2**15), 2**15 - 1


class Int(_BoundedInt):
    """AMQP int: 32-bit signed integer (the SDK's plain ints)."""

    __slots__ = ()
    _min, _max = -(2**31), 2**31 - 1


class Long(_BoundedInt):
    """AMQP long: 64-bit signed integer (what a plain ``int`` encodes as)."""

    __slots__ = ()
    _min, _max = -(2**63), 2**63 - 1


class Timestamp(_BoundedInt):
    """AMQP timestamp: milliseconds since the Unix epoch, UTC."""

    __slots__ = ()
    _min, _max = -(2**63), 2**63 - 1


class Float(float):
    """AMQP float: IEEE 754 binary32, rounded to 32 bits on creation so that it round-trips."""

    __slots__ = ()

    def __new__(cls, value: float = 0.0) -> Self:
        try:
            rounded = struct.unpack(">f", struct.pack(">f", value))[0]
        except (OverflowError, struct.error) as exc:
            raise ValueError(f"Float out of range: {value!r}") from exc
        return super().__new__(cls, rounded)

    def __repr__(self) -> str:
        return f"Float({float(self)!r})"


class Symbol(str):
    """AMQP symbol: an ASCII name (annotation keys, capabilities, error conditions, descriptors)."""

    __slots__ = ()

    def __new__(cls, value: str = "") -> Self:
        self = super().__new__(cls, value)
        if not self.isascii():
            raise ValueError(f"Symbol must be ASCII: {value!r}")
        return self

    def __repr__(self) -> str:
        return f"Symbol({str.__repr__(self)})"


class Char(str):
    """AMQP char: one Unicode code point, sent as UTF-32."""

    __slots__ = ()

    def __new__(cls, value: str) -> Self:
        self = super().__new__(cls, value)
        if len(self) != 1 or 0xD800 <= ord(self) <= 0xDFFF:
            raise ValueError(f"Char must be one non-surrogate code point: {value!r}")
        return self

    def __repr__(self) -> str:
        return f"Char({str.__repr__(self)})"


class _RawDecimal(bytes):
    """A decimal kept as its raw IEEE 754 bytes: carried through unchanged, never computed with."""

    __slots__ = ()
    _width: ClassVar[int]

    def __new__(cls, raw: bytes) -> Self:
        self = super().__new__(cls, raw)
        if len(self) != cls._width:
            raise ValueError(f"{cls.__name__} needs exactly {cls._width} bytes")
        return self

    def __repr__(self) -> str:
        return f"{type(self).__name__}({bytes.__repr__(self)})"


class Decimal32(_RawDecimal):
    """AMQP decimal32, as 4 raw bytes."""

    __slots__ = ()
    _width = 4


class Decimal64(_RawDecimal):
    """AMQP decimal64, as 8 raw bytes."""

    __slots__ = ()
    _width = 8


class Decimal128(_RawDecimal):
    """AMQP decimal128, as 16 raw bytes."""

    __slots__ = ()
    _width = 16


@dataclass(frozen=True)
class Described:
    """A described type: a descriptor (ulong code or symbol name) giving meaning to a value.

    Performatives, message sections and filters are all described values. An ``int`` descriptor
    is stored as `ULong` and a ``str`` as `Symbol`, so equal descriptors compare equal.
    """

    descriptor: int | str
    value: Any

    def __post_init__(self) -> None:
        d = self.descriptor
        if isinstance(d, bool) or not isinstance(d, int | str):
            raise TypeError(f"descriptor must be a ulong or a symbol, not {d!r}")
        if not isinstance(d, ULong | Symbol):
            object.__setattr__(self, "descriptor", ULong(d) if isinstance(d, int) else Symbol(d))


# Element kinds an Array may hold. Plain ``int`` means long, and bytes-like means binary.
_KINDS: tuple[type, ...] = (
    type(None), bool, UByte, UShort, UInt, ULong, Byte, Short, Int, Long, Timestamp,
    Float, float, Char, Symbol, str, Decimal32, Decimal64, Decimal128, bytes, uuid.UUID,
    list, dict, Described,
)  # fmt: skip
_KIND_ALIASES: dict[type, type] = {int: Long, tuple: list, bytearray: bytes, memoryview: bytes}


def kind_of(value: Any) -> type:
    """The AMQP kind of a value: its wrapper class, or the plain type it maps from."""
    for cls in type(value).__mro__:
        if cls in _KIND_ALIASES:
            return _KIND_ALIASES[cls]
        if cls in _KINDS or cls is Array:
            return cls
    raise EncodeError(f"no AMQP type for {type(value).__name__}")


@dataclass(frozen=True, repr=False)
class Array:
    """An AMQP array: items that all share one type and one constructor.

    Capabilities and multi-valued fields are arrays on the wire. ``element_type`` is a kind such as
    `Symbol`, `UInt`, ``str`` or ``int`` (long); it is inferred from the first item when omitted,
    and items are converted to it (``Array([1, 2], UInt)`` holds ``UInt`` values).

    Raises:
        ValueError: an empty array without ``element_type``, or an item that does not fit it.
    """

    items: list[Any]
    element_type: type | None = None

    def __post_init__(self) -> None:
        kind = self.element_type
        if kind is None:
            if not self.items:
                raise ValueError("an empty Array needs an element_type")
            kind = kind_of(self.items[0])
        kind = _KIND_ALIASES.get(kind, kind)
        if kind not in _KINDS and kind is not Array:
            raise ValueError(f"unsupported Array element type {kind!r}")
        items = [_coerce(item, kind) for item in self.items]
        object.__setattr__(self, "element_type", kind)
        object.__setattr__(self, "items", items)

    def __repr__(self) -> str:
        kind = "NoneType" if self.element_type is type(None) else self.element_type.__name__  # type: ignore[union-attr]
        return f"Array({self.items!r}, {kind})"


def _coerce(item: Any, kind: type) -> Any:
    """Convert an item to exactly ``kind``, so that equal arrays hold equal, equally typed items."""
    if type(item) is kind:
        return item
    if issubclass(kind, _BoundedInt | Float) and isinstance(item, int | float):
        if not isinstance(item, bool) and (kind is Float or isinstance(item, int)):
            return kind(item)
    elif kind in (Symbol, Char) and isinstance(item, str):
        return kind(item)
    elif kind_of(item) is kind:
        return kind(item) if kind in (list, bytes, str, float, dict) else item
    raise ValueError(f"Array of {kind.__name__} cannot hold {item!r}")
