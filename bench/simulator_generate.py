"""Offline generation throughput: the simulator writing a fleet's readings and labels to files.

Issue 2 asks for 200 devices x 30 days at 10 s in under a minute; the full run measures exactly
that fleet, ``--quick`` a week of 50 devices. Writes into a temporary directory that is removed
afterwards.

    .venv/bin/python bench/simulator_generate.py [--quick] [--json FILE]

``measure()`` returns the figures (see ``FIGURES``); ``main()`` prints one per line with its
unit and meaning, then one JSON line. Nothing is asserted.
"""

from __future__ import annotations

import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.append(str(Path(__file__).resolve().parent))  # for _common

from _common import bench_parser, report

from simulator.fleet import FleetConfig
from simulator.generate import generate

FIGURES = {
    "simulator_generate_readings_per_s": (
        "readings/s",
        "offline generation, simulation and file writing together",
    ),
    "simulator_generate_readings": ("readings", "readings generated in the timed run"),
    "simulator_generate_seconds": ("s", "wall time of the run"),
}


def measure(
    quick: bool = False, *, devices: int | None = None, days: float | None = None, seed: int = 0
) -> dict[str, float | int]:
    """Generate once and return readings/s, readings and wall seconds.

    Args:
        quick: a week of 50 devices instead of the issue's 200 devices x 30 days.
        devices: override the number of devices (a smoke test uses a handful).
        days: override the simulated days.
        seed: the fleet's seed.
    """
    devices = devices or (50 if quick else 200)
    days = days or (7.0 if quick else 30.0)
    with tempfile.TemporaryDirectory(prefix="bench-simulator-") as tmp:
        started = time.perf_counter()
        manifest = generate(
            FleetConfig(devices=devices, seed=seed),
            days=days,
            out=Path(tmp),
            start=datetime(2026, 1, 1, tzinfo=UTC),
        )
        wall = time.perf_counter() - started
    readings = int(manifest["readings"])
    return {
        "simulator_generate_readings_per_s": round(readings / wall),
        "simulator_generate_readings": readings,
        "simulator_generate_seconds": round(wall, 2),
    }


def main() -> None:
    """Measure and print."""
    parser = bench_parser(__doc__, "50 devices x 7 days (a few s)")
    parser.add_argument("--devices", type=int, help="override the number of devices")
    parser.add_argument("--days", type=float, help="override the simulated days")
    args = parser.parse_args()
    report(measure(args.quick, devices=args.devices, days=args.days), FIGURES, args.json)


if __name__ == "__main__":
    main()
