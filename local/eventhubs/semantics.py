"""Event Hubs semantics without AMQP: addresses, start positions, SAS tokens, keys, ownership.

Everything here takes values and returns values, so the rules the SDK relies on can be tested
without a socket: how link addresses name hubs and partitions, how a selector filter picks the
first event, how a SAS token is checked, which partition a key lands on, and how epochs
(owner levels) decide who reads a partition.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import re
import threading
from dataclasses import dataclass
from urllib.parse import quote_plus, unquote, urlsplit

__all__ = [
    "Address",
    "EmulatorError",
    "Ownership",
    "StartPosition",
    "parse_address",
    "parse_selector",
    "partition_for_key",
    "verify_sas_token",
]

NOT_FOUND = "amqp:not-found"
UNAUTHORIZED = "amqp:unauthorized-access"
LINK_STOLEN = "amqp:link:stolen"
MESSAGE_SIZE_EXCEEDED = "amqp:link:message-size-exceeded"
NOT_ALLOWED = "amqp:not-allowed"
INVALID_FIELD = "amqp:invalid-field"
ARGUMENT_ERROR = "com.microsoft:argument-error"
QUOTA_EXCEEDED = "com.microsoft:quota-exceeded"
RECEIVER_DISCONNECTED = "com.microsoft:receiver-disconnected"

MAX_NON_EPOCH_RECEIVERS = 5


class EmulatorError(Exception):
    """A refusal the server turns into an AMQP error with this condition and description."""

    def __init__(self, condition: str, description: str) -> None:
        self.condition = condition
        self.description = description
        super().__init__(f"{condition}: {description}")


@dataclass(frozen=True, slots=True)
class Address:
    """What a link address names: a hub, a partition, or a consumer group's partition."""

    hub: str
    partition: str | None = None
    consumer_group: str | None = None


_PARTITION = re.compile(r"(?i)^/?([^/]+)/partitions/([^/]+)/?$")
_CONSUMER = re.compile(r"(?i)^/?([^/]+)/consumergroups/([^/]+)/partitions/([^/]+)/?$")
_HUB = re.compile(r"^/?([^/]+)/?$")


def parse_address(address: str) -> Address:
    """Parse a link address; scheme and host are ignored (`amqps://` arrives even without TLS).

    Raises:
        EmulatorError: `amqp:not-found` for a shape Event Hubs does not have.
    """
    path = unquote(urlsplit(address).path if "://" in address else address)
    if m := _CONSUMER.match(path):
        return Address(m.group(1), m.group(3), m.group(2))
    if m := _PARTITION.match(path):
        return Address(m.group(1), m.group(2))
    if m := _HUB.match(path):
        return Address(m.group(1))
    raise EmulatorError(NOT_FOUND, f"no such entity: {address!r}")


@dataclass(frozen=True, slots=True)
class StartPosition:
    """Where a receiver starts: by offset, sequence number or enqueued time (ms)."""

    kind: str  # "offset", "sequence", "time", "earliest", "latest"
    value: int = 0
    inclusive: bool = False


_SELECTOR = re.compile(
    r"^\s*amqp\.annotation\.x-opt-(offset|sequence-number|enqueued-time)\s*(>=|>)\s*'([^']*)'\s*$"
)


def parse_selector(expression: str | None) -> StartPosition:
    """Read the `apache.org:selector-filter:string` the SDK builds from an EventPosition.

    `-1` as an offset means the start of the partition, `@latest` means only new events.

    Raises:
        EmulatorError: `amqp:invalid-field` naming the filter when it cannot be read.
    """
    if expression is None:
        return StartPosition("earliest")
    m = _SELECTOR.match(expression)
    if not m:
        raise EmulatorError(INVALID_FIELD, f"selector filter not understood: {expression!r}")
    field, op, raw = m.groups()
    inclusive = op == ">="
    if field == "offset":
        if raw == "@latest":
            return StartPosition("latest")
        if raw == "-1":
            return StartPosition("earliest")
        kind = "offset"
    else:
        kind = "sequence" if field == "sequence-number" else "time"
    try:
        value = int(raw)
    except ValueError:
        raise EmulatorError(INVALID_FIELD, f"selector value is not a number: {raw!r}") from None
    return StartPosition(kind, value, inclusive)


def sign_sas(audience: str, key_name: str, key: str, expiry: int) -> str:
    """Build a SAS token exactly as Event Hubs clients do (for tests and the CLI)."""
    sr = quote_plus(audience)
    sig = base64.b64encode(
        hmac.new(key.encode(), f"{sr}\n{expiry}".encode(), hashlib.sha256).digest()
    )
    return (
        f"SharedAccessSignature sr={sr}&sig={quote_plus(sig.decode())}&se={expiry}&skn={key_name}"
    )


def verify_sas_token(token: str, *, key_name: str, key: str, now: float) -> str:
    """Check a `SharedAccessSignature sr=..&sig=..&se=..&skn=..` token; return its audience.

    Raises:
        EmulatorError: `amqp:unauthorized-access` saying what is wrong (never the key).
    """
    prefix = "SharedAccessSignature "
    if not token.startswith(prefix):
        raise EmulatorError(UNAUTHORIZED, "InvalidSignature: not a SharedAccessSignature token")
    fields: dict[str, str] = {}
    for part in token[len(prefix) :].split("&"):
        name, _, value = part.partition("=")
        fields[name.strip()] = value
    missing = [f for f in ("sr", "sig", "se", "skn") if f not in fields]
    if missing:
        raise EmulatorError(UNAUTHORIZED, f"InvalidSignature: token lacks {', '.join(missing)}")
    if fields["skn"] != key_name:
        raise EmulatorError(UNAUTHORIZED, f"InvalidSignature: unknown key name {fields['skn']!r}")
    try:
        expiry = int(fields["se"])
    except ValueError:
        raise EmulatorError(UNAUTHORIZED, "InvalidSignature: se is not a number") from None
    if expiry < now:
        raise EmulatorError(UNAUTHORIZED, "ExpiredToken: the token has expired")
    expected = hmac.new(key.encode(), f"{fields['sr']}\n{expiry}".encode(), hashlib.sha256).digest()
    try:
        given = base64.b64decode(unquote(fields["sig"]), validate=True)
    except ValueError:
        raise EmulatorError(UNAUTHORIZED, "InvalidSignature: sig is not base64") from None
    if not hmac.compare_digest(expected, given):
        raise EmulatorError(UNAUTHORIZED, "InvalidSignature: the token has an invalid signature")
    return unquote(fields["sr"])


def _rot(x: int, k: int) -> int:
    return ((x << k) | (x >> (32 - k))) & 0xFFFFFFFF


def _mix(a: int, b: int, c: int) -> tuple[int, int, int]:
    for s1, s2, s3 in ((4, 6, 8), (16, 19, 4)):
        a = ((a - c) & 0xFFFFFFFF) ^ _rot(c, s1)
        c = (c + b) & 0xFFFFFFFF
        b = ((b - a) & 0xFFFFFFFF) ^ _rot(a, s2)
        a = (a + c) & 0xFFFFFFFF
        c = ((c - b) & 0xFFFFFFFF) ^ _rot(b, s3)
        b = (b + a) & 0xFFFFFFFF
    return a, b, c


def _final(a: int, b: int, c: int) -> tuple[int, int, int]:
    c = ((c ^ b) - _rot(b, 14)) & 0xFFFFFFFF
    a = ((a ^ c) - _rot(c, 11)) & 0xFFFFFFFF
    b = ((b ^ a) - _rot(a, 25)) & 0xFFFFFFFF
    c = ((c ^ b) - _rot(b, 16)) & 0xFFFFFFFF
    a = ((a ^ c) - _rot(c, 4)) & 0xFFFFFFFF
    b = ((b ^ a) - _rot(a, 14)) & 0xFFFFFFFF
    c = ((c ^ b) - _rot(b, 24)) & 0xFFFFFFFF
    return a, b, c


def _lookup3(data: bytes) -> tuple[int, int]:
    """Bob Jenkins' lookup3 `hashlittle2` with both seeds 0: returns (c, b)."""
    a = b = c = (0xDEADBEEF + len(data)) & 0xFFFFFFFF
    rest = len(data)
    p = 0
    while rest > 12:
        a = (a + int.from_bytes(data[p : p + 4], "little")) & 0xFFFFFFFF
        b = (b + int.from_bytes(data[p + 4 : p + 8], "little")) & 0xFFFFFFFF
        c = (c + int.from_bytes(data[p + 8 : p + 12], "little")) & 0xFFFFFFFF
        a, b, c = _mix(a, b, c)
        p += 12
        rest -= 12
    if rest == 0:
        return c, b
    tail = data[p:] + bytes(12 - rest)
    a = (a + int.from_bytes(tail[0:4], "little")) & 0xFFFFFFFF
    b = (b + int.from_bytes(tail[4:8], "little")) & 0xFFFFFFFF
    c = (c + int.from_bytes(tail[8:12], "little")) & 0xFFFFFFFF
    a, b, c = _final(a, b, c)
    return c, b


def partition_for_key(key: str, partition_ids: list[str]) -> str:
    """The partition a key lands on: stable, and the same one the SDK's buffered producer picks.

    The 16-bit signed fold of lookup3 modulo the partition count, as the Event Hubs clients
    compute it when they resolve keys on the client side.
    """
    if not key:
        return partition_ids[0]
    c, b = _lookup3(key.encode("utf-8"))
    folded = (c ^ b) & 0xFFFF
    signed = folded - 0x10000 if folded >= 0x8000 else folded
    return partition_ids[abs(signed % len(partition_ids))]


class Ownership:
    """Who may read each (hub, consumer group, partition): the owner-level (epoch) rules.

    A receiver with an epoch takes the partition from receivers with a lower or equal epoch
    and from receivers without one (their links are detached with `amqp:link:stolen`); a
    receiver with a lower epoch than the current owner is refused, and so is one without an
    epoch while an epoch receiver holds the partition. At most 5 receivers without an epoch.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._holders: dict[tuple[str, str, str], dict[int, int | None]] = {}

    def claim(self, key: tuple[str, str, str], link_id: int, epoch: int | None) -> list[int]:
        """Register `link_id`; return the link ids it displaces.

        Raises:
            EmulatorError: the claim is refused (lower epoch, or too many receivers).
        """
        with self._lock:
            holders = self._holders.setdefault(key, {})
            epochs = [e for e in holders.values() if e is not None]
            top = max(epochs) if epochs else None
            if epoch is None:
                if top is not None:
                    raise EmulatorError(
                        RECEIVER_DISCONNECTED,
                        f"epoch {top} owns this partition; a receiver without epoch is refused",
                    )
                if len(holders) >= MAX_NON_EPOCH_RECEIVERS:
                    raise EmulatorError(
                        QUOTA_EXCEEDED,
                        f"at most {MAX_NON_EPOCH_RECEIVERS} receivers per partition and group",
                    )
                holders[link_id] = None
                return []
            if top is not None and epoch < top:
                raise EmulatorError(
                    RECEIVER_DISCONNECTED,
                    f"a receiver with a higher epoch ({top}) owns this partition",
                )
            displaced = [lid for lid in holders if lid != link_id]
            for lid in displaced:
                del holders[lid]
            holders[link_id] = epoch
            return displaced

    def count(self, key: tuple[str, str, str]) -> int:
        """How many receivers hold the partition now."""
        with self._lock:
            return len(self._holders.get(key, {}))

    def release(self, key: tuple[str, str, str], link_id: int) -> None:
        """Forget a receiver that detached."""
        with self._lock:
            holders = self._holders.get(key)
            if holders is not None:
                holders.pop(link_id, None)
