"""One client connection: SASL, open, sessions and links, and what travels on them.

The Event Hubs meaning of a link (CBS put-token, `$management` reads, publishing to a hub or a
partition, a partition receiver with a selector filter and an epoch) is decided at attach and
served here; the namespace itself (hubs, partitions on disk, ownership) is the server's.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from .amqp.frames import (
    AMQP_HEADER,
    SASL_HEADER,
    FrameReader,
    ProtocolHeader,
    encode_frame,
    split_transfers,
)
from .amqp.message import (
    BATCH_MESSAGE_FORMAT,
    AmqpValue,
    Message,
    Properties,
    decode_message,
    encode_message,
    unpack_batch,
    with_message_annotations,
)
from .amqp.performatives import (
    Accepted,
    Attach,
    Begin,
    Close,
    Detach,
    Disposition,
    End,
    Error,
    Flow,
    Open,
    Rejected,
    SASLInit,
    SASLMechanisms,
    SASLOutcome,
    Transfer,
)
from .amqp.types import DecodeError, Int, Long, Symbol, Timestamp, UByte, UInt, ULong, UShort
from .config import HubConfig
from .log import PartitionLog
from .semantics import (
    ARGUMENT_ERROR,
    INVALID_FIELD,
    LINK_STOLEN,
    MESSAGE_SIZE_EXCEEDED,
    NOT_ALLOWED,
    NOT_FOUND,
    UNAUTHORIZED,
    EmulatorError,
    parse_address,
    parse_selector,
)

if TYPE_CHECKING:
    from .server import EventHubsServer

log = logging.getLogger(__name__)

MAX_MESSAGE_SIZE = 1024 * 1024
MAX_FRAME_SIZE = 256 * 1024
MAX_PARTITION_KEY = 128  # characters, as the service allows
PRODUCER_CREDIT = 300
READ_CHUNK = 100
EPOCH = "com.microsoft:epoch"
SELECTOR = "apache.org:selector-filter:string"
ROLE_SENDER, ROLE_RECEIVER = False, True


@dataclass
class _Link:
    name: str
    handle: int  # ours
    remote_handle: int
    role: bool  # ours: ROLE_SENDER feeds a consumer, ROLE_RECEIVER takes a producer's messages
    kind: str  # "cbs", "management", "publish", "consume", "reply"
    hub: HubConfig | None = None
    partition: str | None = None
    consumer_group: str | None = None
    credit: int = 0
    delivery_count: int = 0
    next_sequence: int = 0
    incoming: bytearray = field(default_factory=bytearray)
    incoming_format: int = 0
    incoming_id: int | None = None
    incoming_settled: bool = False
    incoming_oversize: bool = False
    wake: asyncio.Event = field(default_factory=asyncio.Event)
    task: asyncio.Task[None] | None = None
    owner_key: tuple[str, str, str] | None = None
    link_id: int = 0
    node: str = ""  # "$cbs" or "$management" for request/reply links
    reply_to: str | None = None  # a reply link's own address: requests name it in reply-to
    displaced: list[int] = field(default_factory=list)


@dataclass
class _Session:
    channel: int  # ours (= the client's channel)
    remote_channel: int
    links: dict[int, _Link] = field(default_factory=dict)  # by remote handle
    next_handle: int = 0
    next_outgoing_id: int = 0  # transfer-id of our next frame (session flow control counts frames)
    next_delivery_id: int = 0
    next_incoming_id: int = 0  # transfer-id we expect next from the client
    remote_incoming_window: int = 0


def _covers(audience: str, hub_name: str) -> bool:
    """A token for the namespace covers every hub; one for a hub (or below it) covers that hub."""
    path = urlsplit(audience).path.strip("/") if "://" in audience else audience.strip("/")
    return path == "" or path.split("/")[0].lower() == hub_name.lower()


class _ProtocolError(Exception):
    """The client broke AMQP's rules; the connection is closed with an error."""


def _error(condition: str, description: str) -> Error:
    # The SDK reads condition, description and info; a missing info makes it hang.
    return Error(Symbol(condition), description, {})


def _app_props(message: Message) -> dict[str, Any]:
    return {str(k): v for k, v in (message.application_properties or {}).items()}


def _text(value: object) -> str | None:
    if value is None:
        return None
    if isinstance(value, bytes):
        return value.decode("utf-8", "replace")
    return str(value)


class _Connection:
    """One client connection: SASL, open, sessions, links."""

    def __init__(
        self, server: EventHubsServer, reader: asyncio.StreamReader, writer: asyncio.StreamWriter
    ) -> None:
        self.server = server
        self.reader = reader
        self.writer = writer
        self.sessions: dict[int, _Session] = {}
        self.max_frame_size = 512
        self.authorized: set[str] = set()
        self.closed = False
        peer = writer.get_extra_info("peername")
        self.peer = f"{peer[0]}:{peer[1]}" if peer else "?"

    # --- plumbing ------------------------------------------------------------------------
    def send(self, channel: int, body: Any, payload: bytes = b"", *, frame_type: int = 0) -> None:
        if not self.closed:
            self.writer.write(encode_frame(channel, body, payload, frame_type=frame_type))

    async def shutdown(self) -> None:
        if self.closed:
            return
        self.closed = True
        for session in self.sessions.values():
            for link in session.links.values():
                self._drop_link(link)
        self.writer.close()
        with contextlib.suppress(Exception):
            await self.writer.wait_closed()

    async def run(self) -> None:
        """Serve the connection until the client closes it or it fails."""
        try:
            header = await self.reader.readexactly(8)
            reader = FrameReader(MAX_FRAME_SIZE, protocol_headers=True)
            sasl = header == SASL_HEADER
            if sasl:
                self.writer.write(SASL_HEADER)
                self.send(0, SASLMechanisms([Symbol("ANONYMOUS"), Symbol("MSSBCBS")]), frame_type=1)
            elif header == AMQP_HEADER:
                self.writer.write(AMQP_HEADER)
            else:
                self.writer.write(AMQP_HEADER)
                raise ConnectionError(f"unsupported protocol header {header!r}")
            await self.writer.drain()
            while not self.closed:
                data = await self.reader.read(65536)
                if not data:
                    break
                for item in reader.feed(data):
                    if isinstance(item, ProtocolHeader):
                        if item.data != AMQP_HEADER:
                            raise ConnectionError(f"unsupported protocol header {item.data!r}")
                        self.writer.write(AMQP_HEADER)
                        sasl = False
                    elif sasl:
                        if isinstance(item.body, SASLInit):
                            self.send(0, SASLOutcome(UByte(0)), frame_type=1)
                    elif item.body is not None:
                        await self._handle(item.channel, item.body, item.payload)
                await self.writer.drain()
        except (ConnectionError, asyncio.IncompleteReadError):
            pass
        except (DecodeError, _ProtocolError) as exc:
            log.warning("connection %s broke the protocol: %s", self.peer, exc)
            self.send(0, Close(error=_error("amqp:connection:framing-error", str(exc)[:500])))
        except Exception:
            log.exception("connection %s failed", self.peer)
        finally:
            await self.shutdown()

    # --- performatives -------------------------------------------------------------------
    async def _handle(self, channel: int, body: Any, payload: bytes) -> None:
        if isinstance(body, Open):
            self.max_frame_size = min(int(body.max_frame_size or 4294967295), MAX_FRAME_SIZE)
            self.send(
                0,
                Open(
                    container_id="fleetscore-eventhubs-emulator",
                    max_frame_size=UInt(MAX_FRAME_SIZE),
                    channel_max=UShort(
                        min(int(body.channel_max if body.channel_max is not None else 65535), 255)
                    ),
                ),
            )
        elif isinstance(body, Begin):
            old = self.sessions.pop(channel, None)
            if old is not None:  # a channel reused without End: drop what it held
                for link in old.links.values():
                    self._drop_link(link)
            session = _Session(channel=channel, remote_channel=channel)
            session.remote_incoming_window = int(body.incoming_window or 0)
            session.next_incoming_id = int(body.next_outgoing_id or 0)
            self.sessions[channel] = session
            self.send(
                channel,
                Begin(
                    remote_channel=UShort(channel),
                    next_outgoing_id=UInt(0),
                    incoming_window=UInt(65536),
                    outgoing_window=UInt(65536),
                    handle_max=UInt(255),
                ),
            )
        elif isinstance(body, Attach | Flow | Transfer):
            session = self.sessions.get(channel)
            if session is None:
                raise _ProtocolError(f"{type(body).__name__} on channel {channel} before Begin")
            if isinstance(body, Attach):
                self._attach(session, body)
            elif isinstance(body, Flow):
                self._flow(session, body)
            else:
                await self._transfer(session, body, payload)
        elif isinstance(body, Disposition):
            pass  # consumers get settled deliveries; nothing waits on their dispositions
        elif isinstance(body, Detach):
            session = self.sessions.get(channel)
            link = session.links.pop(int(body.handle), None) if session else None
            if link is not None:
                self._drop_link(link)
                self.send(channel, Detach(handle=UInt(link.handle), closed=True))
        elif isinstance(body, End):
            session = self.sessions.pop(channel, None)
            if session is not None:
                for link in session.links.values():
                    self._drop_link(link)
            self.send(channel, End())
        elif isinstance(body, Close):
            self.send(0, Close())
            await self.writer.drain()
            await self.shutdown()

    def _drop_link(self, link: _Link) -> None:
        if link.task is not None:
            link.task.cancel()
            link.task = None
        if link.owner_key is not None:
            self.server._ownership.release(link.owner_key, link.link_id)
            self.server.receivers.pop(link.link_id, None)
            link.owner_key = None

    def _refuse_attach(
        self, session: _Session, attach: Attach, handle: int, exc: EmulatorError
    ) -> None:
        log.info("refused attach %r: %s", attach.name, exc)
        ours = not attach.role
        self.send(
            session.channel,
            Attach(
                name=attach.name,
                handle=UInt(handle),
                role=ours,
                source=attach.source,  # the SDK needs both termini echoed, then reads the detach
                target=attach.target,
            ),
        )
        self.send(
            session.channel,
            Detach(handle=UInt(handle), closed=True, error=_error(exc.condition, exc.description)),
        )

    def _attach(self, session: _Session, attach: Attach) -> None:
        handle = session.next_handle
        session.next_handle += 1
        client_sends = attach.role == ROLE_SENDER
        role = ROLE_RECEIVER if client_sends else ROLE_SENDER
        terminus = attach.target if client_sends else attach.source
        address = _text(getattr(terminus, "address", None)) or ""
        stale = session.links.pop(int(attach.handle), None)
        if stale is not None:  # a handle reused without Detach: release what it held
            self._drop_link(stale)
        link = _Link(str(attach.name), handle, int(attach.handle), role, kind="")
        try:
            self._classify(link, address, attach)
        except EmulatorError as exc:
            self._refuse_attach(session, attach, handle, exc)
            return
        session.links[link.remote_handle] = link
        self.send(
            session.channel,
            Attach(
                name=attach.name,
                handle=UInt(handle),
                role=role,
                snd_settle_mode=UByte(1) if role == ROLE_SENDER else attach.snd_settle_mode,
                rcv_settle_mode=attach.rcv_settle_mode,
                source=attach.source,
                target=attach.target,
                initial_delivery_count=UInt(0) if role == ROLE_SENDER else None,
                max_message_size=ULong(self.server.advertised_max_message_size),
                properties=attach.properties,
            ),
        )
        if role == ROLE_RECEIVER:
            self._grant(session, link)
        if link.kind == "consume":
            link.task = asyncio.get_running_loop().create_task(self._feed(session, link))
        for displaced in link.displaced:
            self._steal(displaced)

    def _classify(self, link: _Link, address: str, attach: Attach) -> None:
        """Decide what the link is for; raise EmulatorError to refuse it."""
        lowered = address.lower()
        for node in ("$cbs", "$management"):
            if lowered.endswith(node):
                link.node = node
                if link.role == ROLE_SENDER:
                    link.kind = "reply"
                    link.reply_to = _text(getattr(attach.target, "address", None))
                else:
                    link.kind = "cbs" if node == "$cbs" else "management"
                return
        target = parse_address(address)
        hub = self.server.hub(target.hub)
        self._require_token(hub.name)
        link.hub = hub
        if link.role == ROLE_RECEIVER:
            link.kind = "publish"
            if target.partition is not None:
                self.server.partition(hub, target.partition)
            link.partition = target.partition
            return
        if target.partition is None or target.consumer_group is None:
            raise EmulatorError(
                NOT_FOUND, f"receive from ConsumerGroups/<group>/Partitions/<id>, not {address!r}"
            )
        groups = {g.lower(): g for g in hub.consumer_groups}
        if target.consumer_group.lower() not in groups:
            raise EmulatorError(
                NOT_FOUND,
                f"The messaging entity '{hub.name}/ConsumerGroups/{target.consumer_group}'"
                " could not be found.",
            )
        plog = self.server.partition(hub, target.partition)
        link.kind = "consume"
        link.partition = target.partition
        link.consumer_group = groups[target.consumer_group.lower()]
        filters = getattr(attach.source, "filter", None) or {}
        selector = None
        for name, value in filters.items():
            if _text(name) == SELECTOR:
                raw = value.value if hasattr(value, "value") else value
                selector = _text(raw)
        position = parse_selector(selector)
        link.next_sequence = _resolve(plog, position)
        props = {_text(k): v for k, v in (attach.properties or {}).items()}
        epoch = props.get(EPOCH)
        if epoch is not None and (isinstance(epoch, bool) or not isinstance(epoch, int)):
            raise EmulatorError(INVALID_FIELD, f"{EPOCH} must be an integer")
        link.link_id = next(self.server._link_ids)
        link.owner_key = (hub.name.lower(), link.consumer_group.lower(), target.partition)
        link.displaced = self.server._ownership.claim(
            link.owner_key, link.link_id, None if epoch is None else int(epoch)
        )
        self.server.receivers[link.link_id] = (self, link)

    def _require_token(self, hub_name: str) -> None:
        if not any(_covers(aud, hub_name) for aud in self.authorized):
            raise EmulatorError(
                UNAUTHORIZED, f"Unauthorized access to '{hub_name}': put a token on $cbs first"
            )

    def _steal(self, link_id: int) -> None:
        entry = self.server.receivers.pop(link_id, None)
        if entry is None:
            return
        conn, link = entry
        for session in conn.sessions.values():
            if session.links.get(link.remote_handle) is link:
                session.links.pop(link.remote_handle, None)
                if link.task is not None:
                    link.task.cancel()
                    link.task = None
                link.owner_key = None
                conn.send(
                    session.channel,
                    Detach(
                        handle=UInt(link.handle),
                        closed=True,
                        error=_error(
                            LINK_STOLEN,
                            "New receiver with higher or equal epoch was opened;"
                            " this receiver was disconnected.",
                        ),
                    ),
                )
                return

    def _grant(self, session: _Session, link: _Link) -> None:
        link.credit = PRODUCER_CREDIT
        self.send(
            session.channel,
            Flow(
                next_incoming_id=UInt(session.next_incoming_id & 0xFFFFFFFF),
                incoming_window=UInt(65536),
                next_outgoing_id=UInt(session.next_outgoing_id & 0xFFFFFFFF),
                outgoing_window=UInt(65536),
                handle=UInt(link.handle),
                delivery_count=UInt(link.delivery_count),
                link_credit=UInt(link.credit),
            ),
        )

    def _flow(self, session: _Session, flow: Flow) -> None:
        if flow.incoming_window is not None:
            # remote-incoming-window = next-incoming-id(flow) + incoming-window(flow)
            #                          - next-outgoing-id(ours)   (AMQP 1.0, 2.5.6)
            base = int(flow.next_incoming_id) if flow.next_incoming_id is not None else 0
            session.remote_incoming_window = (
                base + int(flow.incoming_window) - session.next_outgoing_id
            )
            for other in session.links.values():
                other.wake.set()
        if flow.handle is None:
            return
        link = session.links.get(int(flow.handle))
        if link is None or link.role != ROLE_SENDER:
            return
        # credit = delivery-count(receiver) + link-credit(receiver) - delivery-count(sender)
        remote_count = int(flow.delivery_count) if flow.delivery_count is not None else 0
        link.credit = max(0, remote_count + int(flow.link_credit or 0) - link.delivery_count)
        link.wake.set()

    # --- incoming messages ---------------------------------------------------------------
    async def _transfer(self, session: _Session, transfer: Transfer, payload: bytes) -> None:
        session.next_incoming_id += 1  # every transfer frame uses one id of our incoming window
        link = session.links.get(int(transfer.handle))
        if link is None:
            raise _ProtocolError(f"transfer on unattached handle {int(transfer.handle)}")
        if link.role != ROLE_RECEIVER:
            raise _ProtocolError(f"transfer on link {link.name!r}, which sends to the client")
        if link.incoming_id is None:
            link.incoming_id = (
                int(transfer.delivery_id) if transfer.delivery_id is not None else None
            )
            link.incoming_format = int(transfer.message_format or 0)
            link.incoming_settled = bool(transfer.settled)
        if not link.incoming_oversize:
            link.incoming += payload
            if len(link.incoming) > MAX_MESSAGE_SIZE:
                # Keep memory bounded; the delivery is refused once its last frame is in.
                link.incoming = bytearray()
                link.incoming_oversize = True
        if transfer.more:
            return
        if transfer.aborted:  # the sender gave this delivery up: nothing to store or settle
            link.incoming, link.incoming_id, link.incoming_oversize = bytearray(), None, False
            return
        oversize = link.incoming_oversize
        link.incoming_oversize = False
        data, fmt, delivery_id, settled = (
            bytes(link.incoming),
            link.incoming_format,
            link.incoming_id,
            link.incoming_settled,
        )
        link.incoming = bytearray()
        link.incoming_id = None
        link.delivery_count += 1
        link.credit -= 1
        if link.credit < PRODUCER_CREDIT // 2:
            self._grant(session, link)
        state: Any = Accepted()
        try:
            if oversize:
                raise EmulatorError(
                    MESSAGE_SIZE_EXCEEDED,
                    f"The received message (delivery-id:{delivery_id}) exceeds the limit"
                    f" ({MAX_MESSAGE_SIZE} bytes) currently allowed on the link.",
                )
            await self._dispatch(session, link, data, fmt)
        except EmulatorError as exc:
            log.info("rejected a message on %s: %s", link.name, exc)
            state = Rejected(_error(exc.condition, exc.description))
        except DecodeError as exc:  # a malformed message is refused, the connection stays
            log.info("rejected an undecodable message on %s: %s", link.name, exc)
            state = Rejected(_error("amqp:decode-error", str(exc)[:500]))
        if not settled and delivery_id is not None:
            self.send(
                session.channel,
                Disposition(role=ROLE_RECEIVER, first=UInt(delivery_id), settled=True, state=state),
            )

    async def _dispatch(self, session: _Session, link: _Link, data: bytes, fmt: int) -> None:
        if link.kind == "publish":
            assert link.hub is not None
            if fmt == BATCH_MESSAGE_FORMAT:
                envelope = decode_message(data)
                key = _text((envelope.message_annotations or {}).get(Symbol("x-opt-partition-key")))
                inner = unpack_batch(data)
            else:
                msg = decode_message(data)
                key = _text((msg.message_annotations or {}).get(Symbol("x-opt-partition-key")))
                inner = [data]
            if not inner:
                return
            for raw in inner:  # a consumer must be able to read back every event stored
                decode_message(raw)
            if key is not None and len(key) > MAX_PARTITION_KEY:
                raise EmulatorError(
                    ARGUMENT_ERROR,
                    f"partition key is {len(key)} characters; at most {MAX_PARTITION_KEY}",
                )
            partition = self.server.choose_partition(link.hub, link.partition, key)
            await self.server.publish(link.hub, partition, [(key, raw) for raw in inner])
            return
        message = decode_message(data)
        props = _app_props(message)
        if link.kind == "cbs":
            reply = self._put_token(message, props)
        elif link.kind == "management":
            reply = self._management(message, props)
        else:
            raise EmulatorError(NOT_ALLOWED, "this link does not take messages")
        self._reply(session, link.node, message, reply)

    def _put_token(self, message: Message, props: dict[str, Any]) -> Message:
        token = _text(message.body.value if isinstance(message.body, AmqpValue) else None) or ""
        try:
            audience = self.server.check_token(token)
        except EmulatorError as exc:
            return _status(401, exc.description)
        self.authorized.add(audience)
        return _status(202, "Accepted")

    def _management(self, message: Message, props: dict[str, Any]) -> Message:
        try:
            hub = self.server.hub(_text(props.get("name")) or "")
            token = _text(props.get("security_token"))
            audiences = {self.server.check_token(token)} if token else self.authorized
            if not any(_covers(aud, hub.name) for aud in audiences):
                return _status(401, f"Unauthorized access to '{hub.name}'")
            kind = _text(props.get("type"))
            if kind == "com.microsoft:eventhub":
                return _status(200, "OK", self.server.hub_properties(hub))
            if kind == "com.microsoft:partition":
                partition = _text(props.get("partition")) or ""
                return _status(200, "OK", self.server.partition_properties(hub, partition))
            return _status(400, f"unsupported management type {kind!r}")
        except EmulatorError as exc:
            code = 401 if exc.condition == UNAUTHORIZED else 404
            return _status(code, exc.description)

    def _reply(self, session: _Session, node: str, request: Message, reply: Message) -> None:
        """Answer on the client's receiving link of the same node, correlated by message id."""
        reply_to = _text(request.properties.reply_to) if request.properties else None
        candidates = [ln for ln in session.links.values() if ln.kind == "reply" and ln.node == node]
        target = next((ln for ln in candidates if reply_to and ln.reply_to == reply_to), None)
        target = target or (candidates[0] if candidates else None)
        if target is None:
            log.warning("no %s reply link in this session; answer dropped", node)
            return
        reply.properties = Properties(
            correlation_id=request.properties.message_id if request.properties else None,
            to=request.properties.reply_to if request.properties else None,
        )
        self._deliver(session, target, encode_message(reply))

    def _deliver(self, session: _Session, link: _Link, data: bytes) -> None:
        delivery_id = session.next_delivery_id & 0xFFFFFFFF
        session.next_delivery_id += 1
        tag = delivery_id.to_bytes(4, "big")
        transfer = Transfer(
            handle=UInt(link.handle),
            delivery_id=UInt(delivery_id),
            delivery_tag=tag,
            message_format=UInt(0),
            settled=True,
        )
        frames = split_transfers(session.channel, transfer, data, self.max_frame_size)
        for frame in frames:
            self.writer.write(frame)
        session.next_outgoing_id += len(frames)
        session.remote_incoming_window -= len(frames)
        link.delivery_count += 1
        link.credit -= 1

    # --- consumers -----------------------------------------------------------------------
    async def _feed(self, session: _Session, link: _Link) -> None:
        """Send a partition's events while the link has credit and the session has window."""
        assert link.hub is not None
        assert link.partition is not None
        plog = self.server.partition(link.hub, link.partition)
        signal = self.server.signal(link.hub, link.partition)
        try:
            while not self.closed:
                if link.credit <= 0 or session.remote_incoming_window <= 0:
                    link.wake.clear()
                    await link.wake.wait()
                    continue
                link.next_sequence = max(link.next_sequence, plog.begin_sequence_number)
                records = await asyncio.to_thread(
                    plog.read,
                    link.next_sequence,
                    max_count=min(link.credit, session.remote_incoming_window, READ_CHUNK),
                    max_bytes=1 << 20,
                )
                if not records:
                    await signal.wait(1.0)
                    continue
                for record in records:
                    annotations = {
                        Symbol("x-opt-sequence-number"): Long(record.sequence_number),
                        Symbol("x-opt-offset"): str(record.offset),
                        Symbol("x-opt-enqueued-time"): Timestamp(record.enqueued_time_ms),
                    }
                    if record.partition_key is not None:
                        annotations[Symbol("x-opt-partition-key")] = record.partition_key
                    self._deliver(
                        session, link, with_message_annotations(record.payload, annotations)
                    )
                    link.next_sequence = record.sequence_number + 1
                await self.writer.drain()
        except asyncio.CancelledError:
            pass
        except (ConnectionError, RuntimeError):
            pass
        except Exception as exc:  # never leave a link attached that no longer delivers
            log.exception("receiver %s on %s/%s failed", link.name, link.hub.name, link.partition)
            link.task = None
            self._drop_link(link)
            if session.links.get(link.remote_handle) is link:
                del session.links[link.remote_handle]
            self.send(
                session.channel,
                Detach(
                    handle=UInt(link.handle),
                    closed=True,
                    error=_error("amqp:internal-error", f"{type(exc).__name__}: {exc}"[:500]),
                ),
            )


def _status(code: int, description: str, value: Any = None) -> Message:
    return Message(
        application_properties={"status-code": Int(code), "status-description": description},
        body=AmqpValue(value),
    )


def _resolve(plog: PartitionLog, position: Any) -> int:
    begin, nxt = plog.begin_sequence_number, plog.next_sequence_number
    if position.kind == "earliest":
        return begin
    if position.kind == "latest":
        return nxt
    if position.kind == "sequence":
        start = position.value if position.inclusive else position.value + 1
        return max(start, begin)  # a position past the end waits for events to come
    if position.kind == "offset":
        return max(
            plog.sequence_at_or_after_offset(position.value, inclusive=position.inclusive), begin
        )
    return max(plog.sequence_at_or_after_time(position.value, inclusive=position.inclusive), begin)
