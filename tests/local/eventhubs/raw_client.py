"""A bare AMQP 1.0 client on the project's codec, for what the SDK will not send: malformed and
hostile traffic. Synchronous, one socket, frames read with a deadline."""

from __future__ import annotations

import socket
import time
from typing import Any

from local.eventhubs.amqp.frames import AMQP_HEADER, SASL_HEADER, Frame, FrameReader, encode_frame
from local.eventhubs.amqp.message import (
    AmqpValue,
    Message,
    Properties,
    decode_message,
    encode_message,
)
from local.eventhubs.amqp.performatives import (
    Attach,
    Begin,
    Flow,
    Open,
    SASLInit,
    Source,
    Target,
    Transfer,
)
from local.eventhubs.amqp.types import Symbol, UInt, ULong
from local.eventhubs.semantics import sign_sas


class RawClient:
    """Connect, authenticate with SASL ANONYMOUS, open one connection; send and read frames."""

    def __init__(self, port: int) -> None:
        self.sock = socket.create_connection(("127.0.0.1", port), timeout=5)
        self.reader = FrameReader(1 << 20, protocol_headers=True)
        self.frames: list[Frame] = []
        self.closed = False
        self.sock.sendall(SASL_HEADER)
        self._expect_header()
        self.wait_for(lambda f: f.frame_type == 1)  # sasl-mechanisms
        self.sock.sendall(encode_frame(0, SASLInit(Symbol("ANONYMOUS")), frame_type=1))
        self.wait_for(lambda f: f.frame_type == 1)  # sasl-outcome
        self.sock.sendall(AMQP_HEADER)
        self._expect_header()
        self.send(0, Open(container_id="raw"))
        self.wait_for(lambda f: isinstance(f.body, Open))

    def _expect_header(self) -> None:
        deadline = time.monotonic() + 5
        while time.monotonic() < deadline:
            items = self._read()
            self.frames += [item for item in items if isinstance(item, Frame)]
            if any(not isinstance(item, Frame) for item in items):
                return
        raise TimeoutError("no protocol header")

    def _read(self) -> list[Any]:
        try:
            data = self.sock.recv(65536)
        except TimeoutError:
            return []
        if not data:
            self.closed = True
            return []
        return self.reader.feed(data)

    def send(self, channel: int, body: Any, payload: bytes = b"") -> None:
        self.sock.sendall(encode_frame(channel, body, payload))

    def wait_for(self, match: Any, timeout: float = 5.0) -> Frame:
        """Return the first frame (seen or arriving) that `match` accepts."""
        deadline = time.monotonic() + timeout
        while True:
            for i, frame in enumerate(self.frames):
                if match(frame):
                    return self.frames.pop(i)
            if self.closed or time.monotonic() > deadline:
                raise TimeoutError(
                    f"no matching frame; saw {[type(f.body).__name__ for f in self.frames]}"
                )
            self.frames += [item for item in self._read() if isinstance(item, Frame)]

    def begin(self, channel: int = 0) -> None:
        self.send(
            channel,
            Begin(
                next_outgoing_id=UInt(0), incoming_window=UInt(65536), outgoing_window=UInt(65536)
            ),
        )
        self.wait_for(lambda f: isinstance(f.body, Begin) and f.channel == channel)

    def authorize(self, audience: str, key: str = "SAS_KEY_VALUE", channel: int = 0) -> int:
        """Put a token on $cbs; return the status code of the answer."""
        self.attach(channel, 90, "cbs-out", sender=True, address="$cbs")
        answer = self.attach(
            channel, 91, "cbs-in", sender=False, address="$cbs", target_address="cbs"
        )
        self.send(
            channel,
            Flow(
                next_incoming_id=UInt(0),
                incoming_window=UInt(65536),
                next_outgoing_id=UInt(0),
                outgoing_window=UInt(65536),
                handle=UInt(91),
                delivery_count=UInt(0),
                link_credit=UInt(10),
            ),
        )
        token = sign_sas(audience, "RootManageSharedAccessKey", key, int(time.time()) + 3600)
        request = Message(
            properties=Properties(message_id="put-1", reply_to="cbs"),
            application_properties={
                "operation": "put-token",
                "type": "servicebus.windows.net:sastoken",
                "name": audience,
            },
            body=AmqpValue(token),
        )
        self.transfer(channel, 90, 0, encode_message(request))
        reply = self.wait_for(
            lambda f: isinstance(f.body, Transfer) and int(f.body.handle) == int(answer.handle)
        )
        return int((decode_message(reply.payload).application_properties or {})["status-code"])

    def attach(
        self,
        channel: int,
        handle: int,
        name: str,
        *,
        sender: bool,
        address: str,
        target_address: str | None = None,
        properties: dict | None = None,
    ) -> Attach:
        """Attach a link (`sender=True`: we send to `address`) and return the server's answer."""
        if sender:
            source, target = Source(address=name), Target(address=address)
        else:
            source, target = Source(address=address), Target(address=target_address or name)
        self.send(
            channel,
            Attach(
                name=name,
                handle=UInt(handle),
                role=not sender,
                source=source,
                target=target,
                initial_delivery_count=UInt(0) if sender else None,
                max_message_size=ULong(1 << 20),
                properties=properties,
            ),
        )
        return self.wait_for(lambda f: isinstance(f.body, Attach) and f.body.name == name).body

    def transfer(
        self, channel: int, handle: int, delivery_id: int, payload: bytes, *, fmt: int = 0
    ) -> None:
        self.send(
            channel,
            Transfer(
                handle=UInt(handle),
                delivery_id=UInt(delivery_id),
                delivery_tag=delivery_id.to_bytes(4, "big"),
                message_format=UInt(fmt),
                settled=False,
            ),
            payload,
        )

    def close(self) -> None:
        self.sock.close()
