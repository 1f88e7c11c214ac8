"""The demo: the whole local stack in one command (`python -m local.demo`, `make demo`)."""

from .processes import PortTakenError, ProcessGroup, Service, ServiceError
from .stack import DemoConfig, Ports, Stack
from .summary import PredictionsTable, Summary, summarize, wait_drained
from .traffic import FleetRun, SendResult

__all__ = [
    "DemoConfig",
    "FleetRun",
    "PortTakenError",
    "Ports",
    "PredictionsTable",
    "ProcessGroup",
    "SendResult",
    "Service",
    "ServiceError",
    "Stack",
    "Summary",
    "summarize",
    "wait_drained",
]
