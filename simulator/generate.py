"""Offline mode: write a fleet's readings and labels to files, with no server.

``python -m simulator generate --devices 200 --days 30 --out data/`` simulates in time chunks
(a day at a time for every device, through the same :meth:`Fleet.simulate` as the online mode)
and appends each chunk to raw files, so memory stays bounded by one chunk. At the end each
kind's raw files are streamed into ``<kind>.npz`` (uncompressed, zip64) next to ``truth.jsonl``
and ``manifest.json``.

NPZ arrays, one row per reading, ordered by time then device: ``timestamp_ms`` (int64),
``device`` (int32 index into ``device_ids``), one float32 array per metric (NaN where a dropout
removed it), and labels ``anomaly`` (int8: 0 none, else 1 + index into ``anomaly_kinds``),
``anomaly_metric`` (int8 index into ``metric_names`` or -1), ``mode`` (int8 index into
``modes``, 0 when healthy or failed), ``failed`` (bool), ``health`` (float32) and
``minutes_to_failure`` (float32, -1 when no failure is coming, 0 while failed). A failure is
scheduled when its degradation starts, so the countdown is exact, not estimated.
"""

from __future__ import annotations

import argparse
import json
import shutil
import sys
import time
import zipfile
from datetime import datetime
from pathlib import Path

import numpy as np

from simulator.anomalies import ANOMALY_KINDS
from simulator.fleet import METRICS, MODES, Fleet, FleetConfig, kind_metrics
from simulator.truth import TruthWriter, format_time

__all__ = ["add_generate_arguments", "generate", "run_generate"]

DEFAULT_START = "2026-01-01T00:00:00Z"
_LABELS = {
    "anomaly": np.int8,
    "anomaly_metric": np.int8,
    "mode": np.int8,
    "failed": np.bool_,
    "health": np.float32,
    "minutes_to_failure": np.float32,
}


def add_generate_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``generate`` subcommand's options to ``parser``."""
    parser.add_argument("--devices", type=int, default=200, help="number of machines")
    parser.add_argument("--days", type=float, default=30.0, help="simulated days")
    parser.add_argument("--out", type=Path, default=Path("data"), help="output directory")
    parser.add_argument("--seed", type=int, default=0, help="random seed")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between readings")
    parser.add_argument("--start", default=DEFAULT_START, help="simulated start (ISO 8601, UTC)")
    parser.add_argument("--chunk-hours", type=float, default=24.0, help="time chunk size")


def run_generate(args: argparse.Namespace) -> int:
    """Run the ``generate`` subcommand; returns the process exit code."""
    config = FleetConfig(devices=args.devices, seed=args.seed, interval_s=args.interval)
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    manifest = generate(
        config,
        days=args.days,
        out=args.out,
        start=start,
        chunk_hours=args.chunk_hours,
        progress=True,
    )
    print(
        f"wrote {manifest['readings']:,} readings of {config.devices} devices to {args.out}",
        file=sys.stderr,
    )
    return 0


def generate(
    config: FleetConfig,
    *,
    days: float,
    out: Path,
    start: datetime,
    chunk_hours: float = 24.0,
    progress: bool = False,
) -> dict:
    """Simulate ``days`` of ``config``'s fleet and write NPZ, truth and manifest files to ``out``.

    Returns:
        The manifest that was written to ``out/manifest.json``.
    """
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    fleet = Fleet(config, start=start)
    total = max(1, round(days * 86400.0 / config.interval_s))
    per_chunk = max(1, round(chunk_hours * 3600.0 / config.interval_s))
    kinds = list(dict.fromkeys(fleet.kinds))
    cols = {k: np.array([i for i, kk in enumerate(fleet.kinds) if kk == k]) for k in kinds}
    local = {k: np.arange(len(c), dtype=np.int32) for k, c in cols.items()}
    tmp = out / ".parts"
    tmp.mkdir(exist_ok=True)
    files: dict[str, dict[str, tuple]] = {k: {} for k in kinds}
    for k in kinds:
        names = ["timestamp_ms", "device", *kind_metrics(k), *_LABELS]
        for name in names:
            files[k][name] = (tmp / f"{k}.{name}.bin").open("wb")
    counts = dict.fromkeys(kinds, 0)
    t0, done = time.perf_counter(), 0
    with TruthWriter(out / "truth.jsonl") as truth:
        while done < total:
            steps = min(per_chunk, total - done)
            chunk = fleet.simulate(steps)
            truth.write(fleet.drain_truth())
            for k in kinds:
                c = cols[k]
                mask = chunk.present[:, c]
                n_rows = int(mask.sum())
                counts[k] += n_rows
                fh = files[k]
                ts = np.broadcast_to(chunk.times_ms[:, None], mask.shape)[mask]
                fh["timestamp_ms"].write(ts.astype(np.int64).tobytes())
                dev = np.broadcast_to(local[k], mask.shape)[mask]
                fh["device"].write(dev.tobytes())
                for m in kind_metrics(k):
                    fh[m].write(chunk.values[m][:, c][mask].astype(np.float32).tobytes())
                am = chunk.anomaly_metric[:, c][mask]
                # Re-index the anomaly's metric into this kind's metric list.
                remap = np.array(
                    [kind_metrics(k).index(m) if m in kind_metrics(k) else -1 for m in METRICS]
                    + [-1],
                    dtype=np.int8,
                )
                labels = {
                    "anomaly": chunk.anomaly[:, c][mask],
                    "anomaly_metric": remap[am.astype(np.int64)],
                    "mode": chunk.mode[:, c][mask].astype(np.int8),
                    "failed": chunk.failed[:, c][mask],
                    "health": chunk.health[:, c][mask].astype(np.float32),
                    "minutes_to_failure": chunk.minutes_to_failure[:, c][mask].astype(np.float32),
                }
                for name, dtype in _LABELS.items():
                    fh[name].write(labels[name].astype(dtype).tobytes())
            done += steps
            if progress:
                rate = sum(counts.values()) / max(time.perf_counter() - t0, 1e-9)
                print(
                    f"\rgenerate: {done / total:6.1%} of {days:g} days, "
                    f"{sum(counts.values()):,} readings, {rate:,.0f}/s",
                    end="",
                    file=sys.stderr,
                    flush=True,
                )
        truth_records = truth.count
    if progress:
        print(file=sys.stderr)
    for k in kinds:
        for fh in files[k].values():
            fh.close()
        _write_npz(out / f"{k}.npz", k, tmp, counts[k], [fleet.device_ids[i] for i in cols[k]])
    shutil.rmtree(tmp)
    manifest = {
        "seed": config.seed,
        "devices": config.devices,
        "interval_s": config.interval_s,
        "days": days,
        "start": format_time(fleet.time_of(0)),
        "end": format_time(fleet.time_of(total - 1)),
        "steps": total,
        "readings": sum(counts.values()),
        "anomaly_kinds": ["none", *ANOMALY_KINDS],
        "modes": list(MODES),
        "truth": {"file": "truth.jsonl", "records": truth_records},
        "kinds": {
            k: {
                "file": f"{k}.npz",
                "devices": [fleet.device_ids[i] for i in cols[k]],
                "metrics": list(kind_metrics(k)),
                "readings": counts[k],
            }
            for k in kinds
        },
    }
    (out / "manifest.json").write_text(json.dumps(manifest, indent=2) + "\n", encoding="utf-8")
    return manifest


def _write_npz(path: Path, kind: str, tmp: Path, rows: int, device_ids: list[str]) -> None:
    """Stream one kind's raw parts into an uncompressed NPZ (never all in memory at once)."""
    dtypes = {"timestamp_ms": np.int64, "device": np.int32, **_LABELS}
    small = {
        "device_ids": np.array(device_ids),
        "metric_names": np.array(kind_metrics(kind)),
        "anomaly_kinds": np.array(["none", *ANOMALY_KINDS]),
        "modes": np.array(MODES),
    }
    with zipfile.ZipFile(path, "w", compression=zipfile.ZIP_STORED, allowZip64=True) as zf:
        for name, arr in small.items():
            with zf.open(_entry(name), "w") as f:
                np.lib.format.write_array(f, arr)
        for name in ["timestamp_ms", "device", *kind_metrics(kind), *_LABELS]:
            dtype = np.dtype(dtypes.get(name, np.float32))
            part = tmp / f"{kind}.{name}.bin"
            with zf.open(_entry(name), "w", force_zip64=True) as f, part.open("rb") as src:
                header = {"descr": np.lib.format.dtype_to_descr(dtype), "fortran_order": False}
                np.lib.format.write_array_header_1_0(f, {**header, "shape": (rows,)})
                shutil.copyfileobj(src, f, 16 << 20)
            part.unlink()


def _entry(name: str) -> zipfile.ZipInfo:
    """A zip entry with a fixed date, so the same seed gives the same file bytes."""
    return zipfile.ZipInfo(f"{name}.npy", date_time=(1980, 1, 1, 0, 0, 0))
