"""A picture of one device: its metrics through degradation, failure and maintenance.

``python -m simulator plot --days 3 --seed 7 --out docs/simulator.png`` simulates a small fleet
and draws one panel per metric (plus the hidden health), with injected anomalies shaded by kind,
the degradation span tinted and failure/maintenance marked. Without ``--device`` it picks the
first device that goes through a failure and its maintenance in the window, so the picture
always shows the whole story.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime
from pathlib import Path

import numpy as np

from simulator.anomalies import ANOMALY_KINDS
from simulator.fleet import Fleet, FleetConfig, kind_metrics
from simulator.generate import DEFAULT_START

__all__ = ["add_plot_arguments", "plot_device", "run_plot"]

_PALETTE = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
_COLOURS = dict(zip(ANOMALY_KINDS, _PALETTE, strict=True))


def add_plot_arguments(parser: argparse.ArgumentParser) -> None:
    """Add the ``plot`` subcommand's options to ``parser``."""
    parser.add_argument("--device", help="device id; default: first one that fails and recovers")
    parser.add_argument("--devices", type=int, default=30, help="fleet size to simulate")
    parser.add_argument("--days", type=float, default=3.0, help="simulated days")
    parser.add_argument("--seed", type=int, default=7, help="random seed")
    parser.add_argument("--interval", type=float, default=10.0, help="seconds between readings")
    parser.add_argument("--start", default=DEFAULT_START, help="simulated start (ISO 8601, UTC)")
    parser.add_argument("--out", type=Path, default=Path("docs/simulator.png"), help="PNG path")


def run_plot(args: argparse.Namespace) -> int:
    """Run the ``plot`` subcommand; returns the process exit code."""
    start = datetime.fromisoformat(args.start.replace("Z", "+00:00"))
    config = FleetConfig(devices=args.devices, seed=args.seed, interval_s=args.interval)
    try:
        device = plot_device(config, days=args.days, start=start, out=args.out, device=args.device)
    except ValueError as exc:
        print(f"plot: {exc}", file=sys.stderr)
        return 2
    print(f"plot: wrote {args.out} for {device}", file=sys.stderr)
    return 0


def _ts(text: str) -> np.datetime64:
    return np.datetime64(text.rstrip("Z"), "ms")


def plot_device(
    config: FleetConfig, *, days: float, start: datetime, out: Path, device: str | None = None
) -> str:
    """Simulate ``config``'s fleet for ``days`` and draw one device to ``out`` (PNG).

    Returns:
        The id of the device drawn.

    Raises:
        ValueError: ``device`` is not in the fleet, or none failed and recovered in the window.
    """
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fleet = Fleet(config, start=start)
    chunk = fleet.simulate(max(2, round(days * 86400 / config.interval_s)))
    truth = fleet.drain_truth()
    if device is None:
        failed = {r["device_id"] for r in truth if r["type"] == "failure"}
        repaired = [r["device_id"] for r in truth if r["type"] == "maintenance"]
        chosen = [d for d in fleet.device_ids if d in failed and d in repaired]
        if not chosen:
            raise ValueError("no device failed and was repaired; try more --devices or --days")

        def variety(dev: str) -> int:
            return len(
                {r["kind"] for r in truth if r["type"] == "anomaly" and r["device_id"] == dev}
            )

        # Of those, the one showing the most kinds of injected anomaly (ties: lowest id).
        device = max(chosen, key=variety)
    if device not in fleet.device_ids:
        raise ValueError(f"unknown device {device!r}; the fleet has {fleet.device_ids[0]}...")
    d = fleet.device_ids.index(device)
    kind = fleet.kinds[d]
    mine = [r for r in truth if r["device_id"] == device]
    t = chunk.times_ms.astype("datetime64[ms]")
    shown = np.where(chunk.present[:, d], 1.0, np.nan)
    metrics = kind_metrics(kind)
    fig, axes = plt.subplots(
        len(metrics) + 1, 1, figsize=(14, 2.0 * (len(metrics) + 1)), sharex=True
    )
    for ax, m in zip(axes, metrics, strict=False):
        ax.plot(t, chunk.values[m][:, d] * shown, lw=0.5, color="#1f77b4")
        ax.set_ylabel(m, fontsize=8)
    axes[-1].plot(t, chunk.health[:, d], lw=1.2, color="black")
    axes[-1].set_ylabel("hidden health", fontsize=8)
    axes[-1].set_ylim(-0.05, 1.05)
    seen: set[str] = set()
    for r in mine:
        if r["type"] == "degradation":
            for ax in axes:
                ax.axvspan(_ts(r["start"]), _ts(r["end"]), color="orange", alpha=0.12, lw=0)
            axes[0].text(
                _ts(r["start"]),
                1.02,
                r["mode"],
                transform=axes[0].get_xaxis_transform(),
                fontsize=8,
            )
        elif r["type"] in ("failure", "maintenance"):
            colour = "red" if r["type"] == "failure" else "green"
            for ax in axes:
                ax.axvline(_ts(r["time"]), color=colour, lw=1.2, ls="--")
            axes[-1].text(_ts(r["time"]), 0.5, " " + r["type"], color=colour, fontsize=8)
        elif r["type"] == "anomaly":
            panels = [axes[metrics.index(r["metric"])]] if r["metric"] else list(axes[:-1])
            a, b = (
                _ts(r["start"]),
                _ts(r["end"]) + np.timedelta64(round(config.interval_s * 1000), "ms"),
            )
            label = None if r["kind"] in seen else r["kind"]
            seen.add(r["kind"])
            for ax in panels:
                # Widen one-reading spans so a spike's band is visible at this scale.
                pad = np.timedelta64(20, "m") if r["kind"] == "spike" else np.timedelta64(0, "ms")
                ax.axvspan(
                    a - pad, b + pad, color=_COLOURS[r["kind"]], alpha=0.3, lw=0, label=label
                )
                label = None
    handles = {}
    for ax in axes:
        for h, lab in zip(*ax.get_legend_handles_labels(), strict=True):
            handles.setdefault(lab, h)
    if handles:
        fig.legend(
            handles.values(),
            handles.keys(),
            loc="upper right",
            fontsize=8,
            ncol=6,
            title="injected anomalies",
            title_fontsize=8,
        )
    fig.suptitle(
        f"{device} ({kind}): seed {config.seed}, {days:g} simulated days; orange = degradation",
        fontsize=10,
        x=0.01,
        ha="left",
    )
    fig.tight_layout(rect=(0, 0, 1, 0.96))
    out = Path(out)
    out.parent.mkdir(parents=True, exist_ok=True)
    fig.savefig(out, dpi=90)
    plt.close(fig)
    return device
