"""Drive the real azure-eventhub SDK (its private `_pyamqp` stack) without a network.

The SDK's own connection, session, link, consumer and producer objects build the frames; a
recording transport captures the bytes they would put on the socket, and `deliver` pushes bytes
we encoded into the SDK's own incoming-frame processing. Tests only: this leans on SDK internals
on purpose, to prove byte-level interop with the exact version we ship against.
"""

from __future__ import annotations

import struct
from dataclasses import dataclass, field
from typing import Any

from azure.eventhub import EventData, EventHubConsumerClient, EventHubProducerClient
from azure.eventhub._pyamqp import _decode as sdk_decode
from azure.eventhub._pyamqp import _encode as sdk_encode
from azure.eventhub._pyamqp._connection import Connection
from azure.eventhub._pyamqp.constants import ConnectionState, LinkState, SessionState
from azure.eventhub._pyamqp.sasl import SASLAnonymousCredential, SASLTransportMixin

CONN_STR = (
    "Endpoint=sb://localhost:5672;SharedAccessKeyName=k;SharedAccessKey=v;"
    "EntityPath=hub;UseDevelopmentEmulator=true"
)


class Recorder:
    """Stands in for the SDK transport: keeps every byte the SDK sends."""

    def __init__(self) -> None:
        self.data = bytearray()

    def send_frame(self, channel: int, frame: Any, **kwargs: Any) -> None:
        header, body = sdk_encode.encode_frame(frame, **kwargs)
        self.data += header if body is None else header + struct.pack(">H", channel) + body

    def write(self, data: bytes) -> None:
        self.data += data

    def take(self) -> bytes:
        out, self.data = bytes(self.data), bytearray()
        return out


@dataclass
class SdkPeer:
    """An SDK connection with one mapped session on channel 1 (remote channel 0)."""

    recorder: Recorder = field(default_factory=Recorder)
    connection: Any = None
    session: Any = None

    def __post_init__(self) -> None:
        self.connection = Connection(
            "amqps://localhost:5672",
            transport=self.recorder,
            container_id="sdk-container",
            idle_timeout=60,
            properties={"product": "test"},
        )
        self.connection._set_state(ConnectionState.HDR_EXCH)
        self.connection._outgoing_open()
        self.connection._set_state(ConnectionState.OPENED)
        self.connection._remote_max_frame_size = 512
        self.session = self.connection.create_session()
        self.session._outgoing_begin()
        self.session._set_state(SessionState.MAPPED)
        self.session.remote_incoming_window = 1000
        self.session.remote_channel = 0
        self.connection._incoming_endpoints[0] = self.session

    def deliver(self, frame: bytes) -> None:
        deliver(self.connection, frame)


def deliver(connection: Any, frame: bytes) -> None:
    """Hand one complete frame we encoded to an SDK connection, as its socket reader would."""
    size, _, _, channel = struct.unpack(">IBBH", frame[:8])
    assert size == len(frame)
    decoded = sdk_decode.decode_frame(memoryview(frame[8:])) if size > 8 else None
    connection._process_incoming_frame(channel, decoded)


class SaslClient(SASLTransportMixin):
    """The SDK's own SASL negotiation, reading frames we wrote instead of a socket."""

    def __init__(self, incoming: list[bytes]) -> None:
        self.incoming = incoming
        self.sent = bytearray()
        self.credential = SASLAnonymousCredential()
        self.host = "localhost"

    def write(self, data: bytes) -> None:
        self.sent += data

    def send_frame(self, channel: int, frame: Any, **kwargs: Any) -> None:
        header, body = sdk_encode.encode_frame(frame, **kwargs)
        self.sent += header + struct.pack(">H", channel) + body

    def receive_frame(self, **_: Any) -> tuple[int, Any]:
        data = self.incoming.pop(0)  # as the SDK's transport.read + receive_frame would hand it
        if data.startswith(b"AMQP"):
            return 0, sdk_decode.decode_empty_frame(memoryview(data))
        return struct.unpack(">H", data[6:8])[0], sdk_decode.decode_frame(memoryview(data[8:]))


def consumer(peer: SdkPeer, *, offset: str = "-1", owner_level: int = 0) -> Any:
    """An SDK partition consumer whose receiver link has sent its attach on ``peer``."""
    client = EventHubConsumerClient.from_connection_string(CONN_STR, consumer_group="$Default")
    handler = client._create_consumer(
        "$Default", "0", offset, on_event_received=lambda *_: None, owner_level=owner_level
    )
    handler._create_handler(auth=None)
    handler._handler._session = peer.session
    handler._handler._client_ready()
    return handler


def producer_link(peer: SdkPeer) -> Any:
    """An SDK sender link (as the producer builds it), attached and with credit."""
    client = EventHubProducerClient.from_connection_string(CONN_STR)
    handler = client._create_producer(partition_id=None)
    handler._create_handler(auth=None)
    handler._handler._session = peer.session
    handler._handler._client_ready()
    link = handler._handler._link
    link._set_state(LinkState.ATTACHED)
    link.current_link_credit = 100
    return link


def payload_of(message: Any) -> bytes:
    """The bytes the SDK puts in a transfer for a `_pyamqp` message (or batch)."""
    return bytes(sdk_encode.encode_payload(bytearray(), message))


def event_from_payload(payload: bytes) -> EventData:
    """What an SDK consumer makes of a delivered message's bytes."""
    return EventData._from_message(sdk_decode.decode_payload(memoryview(payload)))


def sdk_fields(frame: bytes) -> tuple[int, list[Any]]:
    """The SDK's view of a frame: (descriptor code, fields by position)."""
    return sdk_decode.decode_frame(memoryview(frame[8:]))
