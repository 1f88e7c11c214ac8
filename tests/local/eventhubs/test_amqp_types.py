import contextlib
import uuid
from typing import Any

import pytest
from azure.eventhub._pyamqp import _decode as sdk_decode
from azure.eventhub._pyamqp import _encode as sdk_encode
from azure.eventhub._pyamqp.types import AMQPTypes
from hypothesis import given, settings
from hypothesis import strategies as st

from local.eventhubs.amqp.types import (
    MAX_DEPTH,
    Array,
    Byte,
    Char,
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
    decode,
    encode,
    encode_into,
    skip_value,
)

U = uuid.UUID("12345678-1234-5678-1234-567812345678")


def same(a: Any, b: Any) -> bool:
    """Equal *and* of the same AMQP types all the way down."""
    if type(a) is not type(b):
        return False
    if isinstance(a, list):
        return len(a) == len(b) and all(same(x, y) for x, y in zip(a, b, strict=True))
    if isinstance(a, dict):
        return len(a) == len(b) and all(
            same(ka, kb) and same(va, vb)
            for (ka, va), (kb, vb) in zip(a.items(), b.items(), strict=True)
        )
    if isinstance(a, Array):
        return a.element_type is b.element_type and same(a.items, b.items)
    if isinstance(a, Described):
        return same(a.descriptor, b.descriptor) and same(a.value, b.value)
    return a == b


@pytest.mark.parametrize(
    ("value", "wire"),
    [
        (None, "40"),
        (True, "5601"),
        (False, "5600"),
        (UByte(7), "5007"),
        (UShort(513), "600201"),
        (UInt(0), "43"),
        (UInt(255), "52ff"),
        (UInt(256), "7000000100"),
        (ULong(0), "44"),
        (ULong(0x70), "5370"),
        (ULong(2**64 - 1), "80ffffffffffffffff"),
        (Byte(-1), "51ff"),
        (Short(-2), "61fffe"),
        (Int(-128), "5480"),
        (Int(128), "7100000080"),
        (5, "5505"),
        (Long(-129), "81ffffffffffffff7f"),
        (Float(1.5), "723fc00000"),
        (1.5, "823ff8000000000000"),
        (Timestamp(1), "830000000000000001"),
        (Char("é"), "73000000e9"),
        (Decimal32(b"\x01\x02\x03\x04"), "7401020304"),
        (U, "98" + U.hex),
        (b"ab", "a0026162"),
        (b"x" * 256, "b000000100" + "78" * 256),
        ("é", "a102c3a9"),
        ("x" * 256, "b100000100" + "78" * 256),
        (Symbol("ab"), "a3026162"),
        (Symbol("x" * 256), "b300000100" + "78" * 256),
        ([], "45"),
        ((), "45"),
        ([True], "c003015601"),
        ([b"x" * 254], "d00000010400000001a0fe" + "78" * 254),
        ({}, "c10100"),
        ({"a": None}, "c10502a1016140"),
        (Described(0x24, []), "00532445"),
        (Described("amqp:accepted:list", []), "00a312616d71703a61636365707465643a6c69737445"),
        (Array([UInt(1), UInt(2)]), "e00402520102"),
        (Array([UInt(1), UInt(256)]), "e00a027000000001" + "00000100"),
        (Array([Symbol("a"), Symbol("bc")]), "e00702a3016102" + "6263"),
        (Array([], Symbol), "e00200a3"),
        (Array([True, False]), "e0040256" + "0100"),
        (Array([None, None], type(None)), "e0020240"),
        (Array([Described(1, "x"), Described(1, "y")]), "e00902005301a1" + "01780179"),
        (Array([[Long(1)]]), "e00c01d0" + "00000006" + "00000001" + "5501"),
    ],
)
def test_encode_picks_the_compact_constructor(value: Any, wire: str) -> None:
    assert encode(value).hex() == wire
    decoded, end = decode(bytes.fromhex(wire))
    assert end == len(wire) // 2
    expected = Long(value) if type(value) is int else list(value) if type(value) is tuple else value
    assert same(decoded, expected)


def test_encode_into_appends_to_the_buffer() -> None:
    buf = bytearray(b"\xff")
    encode_into(buf, UInt(1))
    assert buf == b"\xff\x52\x01"


@pytest.mark.parametrize(
    ("wire", "expected"),
    [
        ("41", True),
        ("42", False),
        ("5401", Int(1)),
        ("52ff", UInt(255)),
        ("7000000001", UInt(1)),
        ("8000000000000000ff", ULong(255)),
        ("8100000000000000ff", Long(255)),
        ("e0020040", Array([], type(None))),
        ("e0020241", Array([True, True])),
        ("e00200b0", Array([], bytes)),
        ("e00a02b0" + "00000000" + "00000000", Array([b"", b""])),
        ("e006025400ff" + "", None),  # truncated: 2 smallints need 2 bytes, size says 4
    ],
)
def test_decode_reads_every_encoding_of_a_type(wire: str, expected: Any) -> None:
    if expected is None:
        with pytest.raises(DecodeError):
            decode(bytes.fromhex(wire))
        return
    value, end = decode(bytes.fromhex(wire))
    assert same(value, expected)
    assert end == len(wire) // 2


def test_decode_accepts_memoryview_and_an_offset() -> None:
    data = b"\x00\x00" + encode([UInt(1), "a"])
    assert decode(memoryview(data), 2) == ([UInt(1), "a"], len(data))


@pytest.mark.parametrize(
    ("make", "arg"),
    [
        (UByte, 256),
        (UByte, -1),
        (UShort, 65536),
        (UInt, 2**32),
        (ULong, -1),
        (Byte, 128),
        (Short, -(2**15) - 1),
        (Int, 2**31),
        (Long, 2**63),
        (Float, 1e300),
        (Symbol, "é"),
        (Char, "ab"),
        (Char, "\ud800"),
        (Decimal64, b"\x00"),
    ],
)
def test_wrappers_refuse_values_outside_their_type(make: Any, arg: Any) -> None:
    with pytest.raises(ValueError, match=r"."):
        make(arg)


def test_wrappers_stay_plain_values_for_everyone_else() -> None:
    assert UInt(5) == 5
    assert UInt(5) + 1 == 6
    assert Symbol("x-opt-offset") == "x-opt-offset"
    assert {Symbol("k"): 1}["k"] == 1
    assert Float(0.1) == pytest.approx(0.1)
    assert repr(UInt(5)) == "UInt(5)"
    assert repr(Symbol("a")) == "Symbol('a')"
    assert repr(Float(0.5)) == "Float(0.5)"
    assert repr(Char("a")) == "Char('a')"
    assert repr(Decimal32(b"\x00" * 4)) == "Decimal32(b'\\x00\\x00\\x00\\x00')"


def test_described_normalises_its_descriptor() -> None:
    assert Described(0x10, []).descriptor.__class__ is ULong
    assert Described("amqp:open:list", []).descriptor.__class__ is Symbol
    with pytest.raises(TypeError):
        Described(True, [])
    with pytest.raises(TypeError):
        Described(1.5, [])


def test_array_infers_and_converts_its_element_type() -> None:
    assert Array([1, 2]).element_type is Long
    assert Array(["a"], Symbol).items == [Symbol("a")]
    assert type(Array(["a"], Symbol).items[0]) is Symbol
    assert type(Array([1], UInt).items[0]) is UInt
    assert type(Array([1.5], Float).items[0]) is Float
    assert Array([(1,)]).element_type is list
    assert Array([b"x"], bytearray).element_type is bytes
    with pytest.raises(ValueError, match="empty Array"):
        Array([])
    with pytest.raises(ValueError, match="cannot hold"):
        Array([UInt(1), "a"])
    with pytest.raises(ValueError, match="unsupported"):
        Array([], set)
    with pytest.raises(EncodeError, match="no AMQP type for object"):
        Array([object()])
    assert repr(Array([1], UInt)) == "Array([UInt(1)], UInt)"
    assert repr(Array([None], type(None))) == "Array([None], NoneType)"


def test_array_elements_share_the_widest_needed_constructor() -> None:
    long_symbol = Symbol("s" * 300)
    assert encode(Array([Symbol("a"), long_symbol]))[:4].hex() == "f0000001"
    assert decode(encode(Array([Symbol("a"), long_symbol])))[0].items == ["a", long_symbol]
    mixed = Array([Long(1), Long(2**40)])
    assert decode(encode(mixed))[0] == mixed
    maps = Array([{Symbol("a"): UInt(1)}, {}])
    assert same(decode(encode(maps))[0], maps)
    nested = Array([Array([UInt(1)]), Array([], UInt)])
    assert same(decode(encode(nested))[0], nested)
    chars = Array([Char("a"), Char("€")])
    assert same(decode(encode(chars))[0], chars)
    uuids = Array([U, U])
    assert same(decode(encode(uuids))[0], uuids)


@pytest.mark.parametrize(
    ("value", "message"),
    [
        (2**63, "out of range"),
        (object(), "no AMQP type"),
        ({1, 2}, "no AMQP type"),
        ("\ud800", "cannot encode"),
        (Array([Described(1, "a"), Described(2, "b")]), "one descriptor"),
        (Array([], Described), "one descriptor"),
    ],
)
def test_encode_refuses_what_amqp_cannot_carry(value: Any, message: str) -> None:
    with pytest.raises(EncodeError, match=message):
        encode(value)


def test_encode_uses_to_described_of_composite_objects() -> None:
    class Thing:
        def to_described(self) -> Described:
            return Described(0x99, [UInt(1)])

    assert encode(Thing()) == encode(Described(0x99, [UInt(1)]))
    assert encode([Thing()]) == encode([Described(0x99, [UInt(1)])])


def test_encode_handles_subclasses_of_plain_types() -> None:
    class Name(str):
        pass

    assert encode(Name("a")) == encode("a")


@pytest.mark.parametrize(
    ("wire", "reason"),
    [
        ("", "no value"),
        ("ff", "unknown constructor"),
        ("70000001", "truncated uint"),
        ("a005", "truncated vbin8"),
        ("a102c328", "invalid str8"),
        ("a301e9", "invalid sym8"),
        ("5602", "boolean byte"),
        ("7300110000", "not a Unicode code point"),
        ("c00201", "truncated list"),
        ("c0020240", "2 items in 1 bytes"),
        ("c00301" + "4040", "list contents end"),
        ("d0ffffffff00000001", "truncated list"),
        ("d000000004ffffffff", "4294967295 items in 0 bytes"),
        ("c00000", "cannot hold its count"),
        ("c1030140" + "40", "map declares 1"),
        ("c10504" + "40404040", "repeats the key"),
        ("c1030245" + "40", "unhashable"),
        ("e00402ff0000", "unknown array element constructor"),
        ("f000000005ffffffff40", "array declares"),
        ("0040" + "45", "descriptor must be"),
        ("00", "no value"),
    ],
)
def test_decode_refuses_malformed_bytes_with_a_reason(wire: str, reason: str) -> None:
    with pytest.raises(DecodeError, match=reason):
        decode(bytes.fromhex(wire))


def test_decode_bounds_nesting() -> None:
    deep: Any = []
    for _ in range(MAX_DEPTH + 2):
        deep = [deep]
    with pytest.raises(DecodeError, match="nested deeper"):
        decode(encode(deep))
    with pytest.raises(DecodeError, match="nested deeper"):
        decode(b"\x00" * 1000)
    with pytest.raises(DecodeError, match="nested deeper"):
        skip_value(b"\x00" * 1000)


def test_decode_of_every_truncation_fails_cleanly() -> None:
    data = encode([Described(Symbol("d"), {Symbol("k"): Array([UInt(1), UInt(300)])}), "x" * 300])
    for cut in range(len(data)):
        with pytest.raises(DecodeError):
            decode(data[:cut])
        with pytest.raises(DecodeError):
            skip_value(data[:cut])


def test_skip_value_finds_the_end_without_decoding() -> None:
    values = [None, UInt(300), "x" * 300, [1, [2]], Described(1, {"a": b"b"}), Array([1, 2])]
    data = b"".join(encode(v) for v in values)
    pos, ends = 0, []
    while pos < len(data):
        pos = skip_value(data, pos)
        ends.append(pos)
    assert ends == [len(b"".join(encode(v) for v in values[: i + 1])) for i in range(len(values))]
    with pytest.raises(DecodeError, match="unknown constructor"):
        skip_value(b"\xff")
    with pytest.raises(DecodeError, match="truncated"):
        skip_value(b"\xb0\x00\x00\x00\x09abc")


# --- SDK interop at the type level ------------------------------------------------------------


def sdk_value(data: bytes) -> Any:
    return sdk_decode._DECODE_BY_CONSTRUCTOR[data[0]](memoryview(data)[1:])[1]


def test_the_sdk_reads_what_we_encode() -> None:
    assert sdk_value(encode(UInt(300))) == 300
    assert sdk_value(encode(ULong(0))) == 0
    assert sdk_value(encode(True)) is True
    assert sdk_value(encode("é")) == "é".encode()  # the SDK keeps strings as bytes
    assert sdk_value(encode(Symbol("s"))) == b"s"
    assert sdk_value(encode(Timestamp(5))) == 5
    assert sdk_value(encode(Array([Symbol("a"), Symbol("b")]))) == [b"a", b"b"]
    assert sdk_value(encode({Symbol("k"): [Long(-1), None]})) == {b"k": [-1, None]}
    assert sdk_value(encode(Described(0x24, []))) == {"accepted": []}


@pytest.mark.parametrize(
    ("sdk", "expected"),
    [
        ({"TYPE": AMQPTypes.uint, "VALUE": 300}, UInt(300)),
        ({"TYPE": AMQPTypes.ulong, "VALUE": 0}, ULong(0)),
        ({"TYPE": AMQPTypes.boolean, "VALUE": True}, True),
        ({"TYPE": AMQPTypes.symbol, "VALUE": b"s"}, Symbol("s")),
        ({"TYPE": AMQPTypes.timestamp, "VALUE": 5}, Timestamp(5)),
        (
            {"TYPE": AMQPTypes.array, "VALUE": [{"TYPE": AMQPTypes.symbol, "VALUE": b"a"}]},
            Array([Symbol("a")]),
        ),
        (
            {"TYPE": AMQPTypes.array, "VALUE": [{"TYPE": AMQPTypes.uint, "VALUE": 1}]},
            Array([UInt(1)]),
        ),
        ({"a": 1, "b": [1.5, None]}, {"a": Int(1), "b": [1.5, None]}),
    ],
)
def test_we_read_what_the_sdk_encodes(sdk: Any, expected: Any) -> None:
    out = bytearray()
    sdk_encode.encode_value(out, sdk)
    assert same(decode(bytes(out))[0], expected)


# --- properties ---------------------------------------------------------------------------------

symbols = st.text(st.characters(max_codepoint=127), max_size=8).map(Symbol)
scalars = st.one_of(
    st.none(),
    st.booleans(),
    st.integers(0, 2**8 - 1).map(UByte),
    st.integers(0, 2**16 - 1).map(UShort),
    st.integers(0, 2**32 - 1).map(UInt),
    st.integers(0, 2**64 - 1).map(ULong),
    st.integers(-(2**7), 2**7 - 1).map(Byte),
    st.integers(-(2**15), 2**15 - 1).map(Short),
    st.integers(-(2**31), 2**31 - 1).map(Int),
    st.integers(-(2**63), 2**63 - 1).map(Long),
    st.integers(-(2**63), 2**63 - 1).map(Timestamp),
    st.floats(width=32, allow_nan=False).map(Float),
    st.floats(allow_nan=False),
    st.characters(blacklist_categories=("Cs",)).map(Char),
    st.binary(min_size=4, max_size=4).map(Decimal32),
    st.binary(min_size=8, max_size=8).map(Decimal64),
    st.binary(min_size=16, max_size=16).map(Decimal128),
    st.uuids(),
    st.binary(max_size=300),
    st.text(max_size=20),
    symbols,
)
arrays = st.one_of(
    st.lists(st.integers(0, 2**32 - 1).map(UInt), max_size=4).map(lambda xs: Array(xs, UInt)),
    st.lists(st.integers(-(2**63), 2**63 - 1), max_size=4).map(lambda xs: Array(xs, int)),
    st.lists(symbols, max_size=4).map(lambda xs: Array(xs, Symbol)),
    st.lists(st.text(max_size=300), max_size=3).map(lambda xs: Array(xs, str)),
    st.lists(st.booleans(), max_size=4).map(lambda xs: Array(xs, bool)),
    st.lists(st.floats(allow_nan=False), max_size=3).map(lambda xs: Array(xs, float)),
    st.lists(st.none(), max_size=3).map(lambda xs: Array(xs, type(None))),
    st.lists(st.binary(max_size=5), min_size=1, max_size=3).map(
        lambda xs: Array([Described(Symbol("d"), x) for x in xs])
    ),
)
keys = st.one_of(symbols, st.text(max_size=5), st.integers(0, 2**64 - 1).map(ULong))
descriptors = st.one_of(st.integers(0, 2**64 - 1).map(ULong), symbols)
values = st.recursive(
    st.one_of(scalars, arrays),
    lambda children: st.one_of(
        st.lists(children, max_size=4),
        st.dictionaries(keys, children, max_size=4),
        st.builds(Described, descriptors, children),
        st.lists(st.lists(children, max_size=2), min_size=1, max_size=2).map(
            lambda xs: Array(xs, list)
        ),
        st.lists(st.dictionaries(keys, children, max_size=2), min_size=1, max_size=2).map(
            lambda xs: Array(xs, dict)
        ),
        st.lists(arrays, min_size=1, max_size=2).map(lambda xs: Array(xs, Array)),
    ),
    max_leaves=20,
)


@settings(max_examples=300, deadline=None)
@given(values)
def test_property_decode_inverts_encode_with_types_kept(value: Any) -> None:
    data = encode(value)
    decoded, end = decode(data)
    assert end == len(data)
    assert skip_value(data) == len(data)
    assert same(decoded, value)
    assert encode(decoded) == data


@settings(max_examples=300, deadline=None)
@given(st.binary(max_size=200))
def test_property_decode_of_random_bytes_raises_only_decode_error(data: bytes) -> None:
    for fn in (decode, skip_value):
        with contextlib.suppress(DecodeError):
            fn(data)


@settings(max_examples=300, deadline=None)
@given(values, st.data())
def test_property_decode_of_corrupted_values_raises_only_decode_error(
    value: Any, data: st.DataObject
) -> None:
    raw = bytearray(encode(value))
    for _ in range(data.draw(st.integers(1, 3))):
        at = data.draw(st.integers(0, len(raw) - 1))
        raw[at] = data.draw(st.integers(0, 255))
    cut = data.draw(st.integers(0, len(raw)))
    for blob in (bytes(raw), bytes(raw[:cut])):
        for fn in (decode, skip_value):
            with contextlib.suppress(DecodeError):
                fn(blob)


@pytest.mark.parametrize(
    "module",
    ["types", "_encoding", "performatives", "frames", "message"],
)
def test_docstring_examples_run(module: str) -> None:
    import doctest
    import importlib

    mod = importlib.import_module(f"local.eventhubs.amqp.{module}")
    result = doctest.testmod(mod)
    assert result.attempted > 0
    assert result.failed == 0
