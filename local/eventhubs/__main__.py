"""`python -m local.eventhubs`: serve the Event Hubs emulator until SIGTERM or Ctrl-C."""

from __future__ import annotations

import argparse
import asyncio
import logging
import os
import signal
import sys
from datetime import timedelta
from pathlib import Path

from .config import ConfigFileError, default_config, load_config
from .server import DEFAULT_KEY, DEFAULT_KEY_NAME, EventHubsServer
from .store import HubStore

DEFAULT_CONFIG = Path(__file__).with_name("Config.json")


def _parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(
        prog="python -m local.eventhubs",
        description=(
            "An Event Hubs emulator for the unmodified azure-eventhub SDK: AMQP 1.0 on plain TCP, "
            "partitions kept on disk. Clients connect with the printed connection string "
            "(UseDevelopmentEmulator=true)."
        ),
    )
    p.add_argument(
        "--config",
        type=Path,
        default=DEFAULT_CONFIG,
        help="emulator Config.json (Microsoft's emulator format; default: the repo's own)",
    )
    p.add_argument("--host", default="127.0.0.1", help="address to listen on (default 127.0.0.1)")
    p.add_argument(
        "--port", type=int, default=5672, help="AMQP port (default 5672; 0 = any free port)"
    )
    p.add_argument(
        "--data-dir",
        type=Path,
        default=Path(".local/eventhubs"),
        help="where partitions are stored (default .local/eventhubs)",
    )
    p.add_argument(
        "--key-name",
        default=os.environ.get("EVENTHUBS_EMULATOR_KEY_NAME", DEFAULT_KEY_NAME),
        help=f"SAS key name (env EVENTHUBS_EMULATOR_KEY_NAME; default {DEFAULT_KEY_NAME})",
    )
    p.add_argument(
        "--key",
        default=os.environ.get("EVENTHUBS_EMULATOR_KEY", DEFAULT_KEY),
        help="SAS key (env EVENTHUBS_EMULATOR_KEY; default the emulator's well-known value)",
    )
    p.add_argument(
        "--fsync",
        choices=["always", "batch", "never"],
        default="always",
        help="when appends reach the disk before a send is acknowledged (default always)",
    )
    p.add_argument(
        "--retention-hours", type=float, default=24.0, help="time-based retention (default 24)"
    )
    p.add_argument("--log-level", default="INFO", help="DEBUG, INFO, WARNING (default INFO)")
    return p


def _shown(connection_string: str, key: str) -> str:
    """The connection string to print: the well-known key as is, a run's own key masked."""
    if key == DEFAULT_KEY:
        return connection_string
    return connection_string.replace(f"SharedAccessKey={key}", "SharedAccessKey=***")


async def _serve(args: argparse.Namespace) -> int:
    try:
        config = load_config(args.config) if args.config else default_config()
    except (ConfigFileError, OSError) as exc:
        print(f"error: {args.config}: {exc}", file=sys.stderr)
        return 2
    store = HubStore(
        args.data_dir, fsync=args.fsync, retention=timedelta(hours=args.retention_hours)
    )
    server = EventHubsServer(
        config, store, host=args.host, port=args.port, key_name=args.key_name, key=args.key
    )
    try:
        await server.start()
    except OSError as exc:
        print(f"error: cannot listen on {args.host}:{args.port}: {exc}", file=sys.stderr)
        store.close()
        return 2
    print(f"Event Hubs emulator on {args.host}:{server.port}, data in {args.data_dir}")
    for name, hub in config.hubs.items():
        groups = ", ".join(hub.consumer_groups)
        print(f"  {name}: {hub.partition_count} partitions; consumer groups {groups}")
        print(f"    {_shown(server.connection_string(name), args.key)}")
    sys.stdout.flush()
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()
    print("stopping", flush=True)
    await server.stop()
    store.close()
    return 0


def main(argv: list[str] | None = None) -> int:
    """Parse arguments and serve."""
    args = _parser().parse_args(argv)
    logging.basicConfig(
        level=args.log_level.upper(), format="%(asctime)s %(levelname)s %(name)s: %(message)s"
    )
    return asyncio.run(_serve(args))


if __name__ == "__main__":
    raise SystemExit(main())
