"""A small AMQP 1.0 codec of our own, for the Event Hubs emulator.

Why our own and not python-qpid-proton: the azure-eventhub SDK reads performative fields by
position and proton omits trailing empty fields; proton also hides a delivery's message-format
and decodes binary delivery tags as text. This codec writes every field, exposes both, and decodes
strictly (malformed input is a `DecodeError`, never a crash).

Modules: `types` (the type system, encode/decode), `performatives` (frame bodies, termini,
delivery states, SASL), `frames` (framing and a streaming reader), `message` (the message
format, Event Hubs batches). Everything public is re-exported here.
"""

from local.eventhubs.amqp.frames import *  # noqa: F403
from local.eventhubs.amqp.frames import __all__ as _frames_all
from local.eventhubs.amqp.message import *  # noqa: F403
from local.eventhubs.amqp.message import __all__ as _message_all
from local.eventhubs.amqp.performatives import *  # noqa: F403
from local.eventhubs.amqp.performatives import __all__ as _performatives_all
from local.eventhubs.amqp.types import *  # noqa: F403
from local.eventhubs.amqp.types import __all__ as _types_all

__all__ = [*_types_all, *_performatives_all, *_frames_all, *_message_all]
