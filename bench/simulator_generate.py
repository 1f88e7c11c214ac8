"""Offline generation throughput: 200 devices x 30 days at 10 s must finish in under a minute.

Run: ``.venv/bin/python bench/simulator_generate.py [--devices 200] [--days 30]``. Prints
readings/s and wall time; writes into a temporary directory that is removed afterwards.
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from simulator.fleet import FleetConfig
from simulator.generate import generate


def main() -> None:
    """Generate once and print the figures."""
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--devices", type=int, default=200)
    parser.add_argument("--days", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        t0 = time.perf_counter()
        manifest = generate(
            FleetConfig(devices=args.devices, seed=args.seed),
            days=args.days,
            out=Path(tmp),
            start=datetime(2026, 1, 1, tzinfo=UTC),
            progress=True,
        )
        wall = time.perf_counter() - t0
        size = sum(p.stat().st_size for p in Path(tmp).iterdir())
    n = manifest["readings"]
    print(f"devices={args.devices} days={args.days:g} readings={n:,}")
    print(f"wall={wall:.1f} s  rate={n / wall:,.0f} readings/s  files={size / 1e9:.2f} GB")


if __name__ == "__main__":
    main()
