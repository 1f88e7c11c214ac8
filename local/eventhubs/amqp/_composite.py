"""The declarative machinery behind performatives and message sections: described lists.

A described list is a dataclass whose fields, in spec order, each carry a `Kind` (how the value
goes to the wire, coercing plain Python values, and how a decoded value is checked). The class is
registered under its descriptor code and symbolic name, so decoding can find it.
"""

from __future__ import annotations

import dataclasses
import uuid
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar, Self, TypeVar

from local.eventhubs.amqp.types import (
    Array,
    DecodeError,
    Described,
    EncodeError,
    Symbol,
    Timestamp,
    UByte,
    UInt,
    ULong,
    UShort,
)

__all__ = [
    "ANNOTATIONS",
    "ANY",
    "BINARY",
    "BOOL",
    "FIELDS",
    "MAP",
    "MESSAGE_ID",
    "REGISTRY",
    "STRING",
    "SYMBOL",
    "SYMBOLS",
    "TIMESTAMP",
    "UBYTE",
    "UINT",
    "ULONG",
    "USHORT",
    "Composite",
    "Kind",
    "composite_kind",
    "described_list",
    "from_described",
    "opt",
    "req",
]


@dataclass(frozen=True)
class Kind:
    """How one field's value goes to the wire (coercing) and comes back (checking)."""

    label: str
    to_wire: Callable[[Any], Any]
    from_wire: Callable[[Any], Any]


def _wire_type(wrap: type, label: str) -> Kind:
    """A kind for one wire type: plain ints/strs are converted to it, decoded values must be it."""
    accepts = str if issubclass(wrap, str) else int

    def to_wire(v: Any) -> Any:
        if type(v) is wrap:
            return v
        if not isinstance(v, accepts) or isinstance(v, bool):
            raise TypeError(f"expected {label}, got {v!r}")
        return wrap(v)

    def from_wire(v: Any) -> Any:
        if type(v) is not wrap:
            raise DecodeError(f"expected {label}, got {v!r}")
        return v

    return Kind(label, to_wire, from_wire)


def _exact(wrap: type, label: str) -> Callable[[Any], Any]:
    def from_wire(v: Any) -> Any:
        if type(v) is not wrap:
            raise DecodeError(f"expected {label}, got {v!r}")
        return v

    return from_wire


def _checked(expected: type | tuple[type, ...], label: str) -> Callable[[Any], Any]:
    def check(v: Any) -> Any:
        if not isinstance(v, expected):
            raise TypeError(f"expected {label}, got {v!r}")
        return v

    return check


def _symbols_to_wire(v: str | Sequence[str] | Array) -> Array:
    if isinstance(v, Array):
        return v if v.element_type is Symbol else Array(list(v.items), Symbol)
    return Array([v] if isinstance(v, str) else list(v), Symbol)


def _symbols_from_wire(v: Any) -> tuple[Symbol, ...]:
    if type(v) is Symbol:
        return (v,)
    if isinstance(v, Array) and v.element_type is Symbol:
        return tuple(v.items)
    raise DecodeError(f"expected a symbol or an array of symbols, got {v!r}")


def _map_kind(label: str, key_ok: Callable[[Any], bool], key_to_wire: Callable[[Any], Any]) -> Kind:
    def to_wire(v: dict[Any, Any]) -> dict[Any, Any]:
        return {key_to_wire(k): item for k, item in _checked(dict, "a map")(v).items()}

    def from_wire(v: Any) -> dict[Any, Any]:
        if not isinstance(v, dict) or not all(key_ok(k) for k in v):
            raise DecodeError(f"expected {label}, got {v!r}")
        return v

    return Kind(label, to_wire, from_wire)


def _annotation_key(k: Any) -> Any:
    if type(k) is Symbol or type(k) is ULong:
        return k
    if isinstance(k, bool) or not isinstance(k, int | str):
        raise TypeError(f"an annotation key is a symbol or a ulong, not {k!r}")
    return ULong(k) if isinstance(k, int) else Symbol(k)


# The field kinds of the spec's performatives and message sections.
STRING = Kind("string", lambda v: str(_checked(str, "a string")(v)), _exact(str, "string"))
SYMBOL = _wire_type(Symbol, "symbol")
_BYTES_LIKE = _checked(bytes | bytearray | memoryview, "bytes")
BINARY = Kind("binary", lambda v: bytes(_BYTES_LIKE(v)), _exact(bytes, "binary"))
BOOL = Kind("boolean", _checked(bool, "a boolean"), _exact(bool, "boolean"))
UBYTE, USHORT = _wire_type(UByte, "ubyte"), _wire_type(UShort, "ushort")
UINT, ULONG = _wire_type(UInt, "uint"), _wire_type(ULong, "ulong")
TIMESTAMP = _wire_type(Timestamp, "timestamp")
ANY = Kind("any", lambda v: v, lambda v: v)
SYMBOLS = Kind("symbols", _symbols_to_wire, _symbols_from_wire)
FIELDS = _map_kind(
    "a symbol-keyed map", lambda k: type(k) is Symbol, _wire_type(Symbol, "symbol").to_wire
)
ANNOTATIONS = _map_kind("annotations", lambda k: type(k) in (Symbol, ULong), _annotation_key)
MAP = _map_kind("a map", lambda k: True, lambda k: k)


def _message_id_to_wire(v: Any) -> Any:
    if isinstance(v, bool) or not isinstance(v, int | str | bytes | uuid.UUID):
        raise TypeError(f"a message id is a ulong, uuid, binary or string, not {v!r}")
    return ULong(v) if isinstance(v, int) else v


def _message_id_from_wire(v: Any) -> Any:
    if type(v) not in (ULong, uuid.UUID, bytes, str):
        raise DecodeError(f"a message id is a ulong, uuid, binary or string, not {v!r}")
    return v


MESSAGE_ID = Kind("message-id", _message_id_to_wire, _message_id_from_wire)

REGISTRY: dict[ULong | Symbol, type[Composite]] = {}
_C = TypeVar("_C", bound="Composite")


class Composite:
    """A described list: the shape shared by performatives, termini, states and message sections."""

    DESCRIPTOR: ClassVar[int]
    NAME: ClassVar[str]
    _spec: ClassVar[tuple[tuple[str, Kind, bool], ...]]
    _descriptor: ClassVar[ULong]

    def to_described(self) -> Described:
        """Return this as a described list with every field present (for `types.encode`).

        Raises:
            EncodeError: a mandatory field is None or a value does not fit its field's type.
        """
        values = []
        for name, kind, mandatory in self._spec:
            value = getattr(self, name)
            if value is None:
                if mandatory:
                    raise EncodeError(f"{type(self).__name__}.{name} is mandatory")
            else:
                try:
                    value = kind.to_wire(value)
                except (TypeError, ValueError) as exc:
                    raise EncodeError(f"{type(self).__name__}.{name}: {exc}") from exc
            values.append(value)
        return Described(self._descriptor, values)

    @classmethod
    def from_fields(cls, values: Any) -> Self:
        """Build from a decoded field list that may be shorter than the spec's (defaults fill in).

        Raises:
            DecodeError: not a list, too many fields, a wrong type, or a missing mandatory field.
        """
        if not isinstance(values, list) or len(values) > len(cls._spec):
            raise DecodeError(f"{cls.__name__} needs a list of <= {len(cls._spec)} fields")
        kwargs = {}
        for (name, kind, _), value in zip(cls._spec, values, strict=False):
            if value is not None:
                try:
                    kwargs[name] = kind.from_wire(value)
                except DecodeError as exc:
                    raise DecodeError(f"{cls.__name__}.{name}: {exc}") from None
        missing = [name for name, _, mandatory in cls._spec if mandatory and name not in kwargs]
        if missing:
            raise DecodeError(f"{cls.__name__} lacks mandatory {', '.join(missing)}")
        return cls(**kwargs)


def described_list(code: int, name: str) -> Callable[[type[_C]], type[_C]]:
    """Register a dataclass as the described list with this descriptor code and symbolic name."""

    def register(cls: type[_C]) -> type[_C]:
        cls.DESCRIPTOR, cls.NAME, cls._descriptor = code, name, ULong(code)
        cls._spec = tuple(
            (f.name, f.metadata["kind"], f.metadata.get("mandatory", False))
            for f in dataclasses.fields(cls)
        )
        REGISTRY[ULong(code)] = REGISTRY[Symbol(name)] = cls
        return cls

    return register


def opt(kind: Kind) -> dict[str, Any]:
    """Field metadata naming the field's AMQP kind: ``field(default=..., metadata=opt(K))``."""
    return {"kind": kind}


def req(kind: Kind) -> dict[str, Any]:
    """Field metadata for a mandatory field: None there is an error both ways."""
    return {"kind": kind, "mandatory": True}


def from_described(value: Described) -> Any:
    """Turn a decoded `Described` into its registered class (``Source``, ``Accepted``, ...).

    Raises:
        DecodeError: the descriptor is not one we know, or the fields do not fit it.
    """
    cls = REGISTRY.get(value.descriptor)  # type: ignore[arg-type]
    if cls is None:
        raise DecodeError(f"unknown descriptor {value.descriptor!r}")
    return cls.from_fields(value.value)


def composite_kind(label: str, *classes: type, keep_unknown: bool = False) -> Kind:
    """A kind for a field holding one of ``classes`` (a nested described list).

    With ``keep_unknown``, a described value whose descriptor we do not know is kept as a raw
    `Described` instead of failing: delivery states are an extension point (transactions).
    """

    def from_wire(v: Any) -> Any:
        if isinstance(v, Described):
            cls = REGISTRY.get(v.descriptor)  # type: ignore[arg-type]
            if cls in classes:
                return cls.from_fields(v.value)
            if cls is None and keep_unknown:
                return v  # e.g. a transactional state: carried, not understood
        raise DecodeError(f"expected {label}, got {v!r}")

    return Kind(label, _checked((*classes, Described), label), from_wire)
