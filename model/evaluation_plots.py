"""The evaluation report's figures, drawn from the run's arrays (never from typed-in numbers)."""

from __future__ import annotations

from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only, no display; must precede pyplot
import matplotlib.pyplot as plt
import numpy as np
from matplotlib.ticker import MaxNLocator

from model.evaluation_metrics import anomaly_windows, runs
from simulator.anomalies import ANOMALY_KINDS

__all__ = ["plot_leads", "plot_roc", "plot_scores"]

_PALETTE = ("#d62728", "#9467bd", "#8c564b", "#e377c2", "#7f7f7f", "#bcbd22")
_DPI = 80


def _bin_max(hours: np.ndarray, values: np.ndarray, bins: int) -> tuple[np.ndarray, np.ndarray]:
    """Max per time bin: a one-reading spike stays visible in a small picture."""
    if values.size <= bins:
        return hours, values
    edges = np.linspace(0, values.size, bins + 1).astype(int)
    return hours[edges[:-1]], np.maximum.reduceat(values, edges[:-1])


def plot_scores(
    path: Path,
    title: str,
    hours: np.ndarray,
    series: list[tuple[str, np.ndarray, float]],
    anomaly: np.ndarray,
    degrading: np.ndarray,
    failed: np.ndarray,
    warmup_h: float,
) -> None:
    """One panel per method: its score, its threshold, labelled windows shaded by kind.

    Args:
        path: PNG to write.
        title: Figure title (device and fleet).
        hours: Time of each reading in hours from the start.
        series: ``(method, score per reading, threshold)`` per panel.
        anomaly: Anomaly label per reading (0 none, else 1 + kind).
        degrading: Per reading, whether the device is degrading.
        failed: Per reading, whether it has failed.
        warmup_h: Hours of warm-up, greyed out (not scored).
    """
    fig, axes = plt.subplots(len(series), 1, figsize=(11, 2.1 * len(series)), sharex=True)
    axes = np.atleast_1d(axes)
    starts, ends, kinds = anomaly_windows(anomaly)
    step_h = float(np.median(np.diff(hours))) if hours.size > 1 else 1.0
    min_w = 0.1  # hours: a one-reading spike still gets a visible band
    for ax, (name, score, thr) in zip(axes, series, strict=True):
        ax.axvspan(hours[0], hours[0] + warmup_h, color="#eeeeee", lw=0)
        for s, e in zip(*runs(degrading), strict=True):
            ax.axvspan(hours[s], hours[e - 1] + step_h, color="#ffe9a8", lw=0)
        for s, e in zip(*runs(failed), strict=True):
            ax.axvspan(hours[s], hours[e - 1] + step_h, color="#bbbbbb", lw=0)
        for s, e, k in zip(starts, ends, kinds, strict=True):
            width = max(hours[e - 1] + step_h - hours[s], min_w)
            ax.axvspan(hours[s], hours[s] + width, color=_PALETTE[k], alpha=0.35, lw=0)
        bh, bs = _bin_max(hours, score, 1500)
        ax.plot(bh, bs, lw=0.6, color="#1f77b4")
        ax.axhline(thr, color="black", lw=0.8, ls="--")
        ax.set_ylabel(name, fontsize=8)
        ax.tick_params(labelsize=7)
    handles = [
        plt.Rectangle((0, 0), 1, 1, color=c, alpha=0.35) for c in _PALETTE[: len(ANOMALY_KINDS)]
    ]
    handles += [plt.Rectangle((0, 0), 1, 1, color=c) for c in ("#ffe9a8", "#bbbbbb", "#eeeeee")]
    labels = [*ANOMALY_KINDS, "degrading", "failed", "warm-up"]
    axes[0].legend(handles, labels, ncol=9, fontsize=7, loc="lower left", bbox_to_anchor=(0, 1))
    axes[0].set_title(title, fontsize=9, pad=22)
    axes[-1].set_xlabel("hours from start (dashed: threshold; bins show their maximum)", fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def plot_roc(path: Path, fpr: np.ndarray, tpr: np.ndarray, auc: float, horizon_h: float) -> None:
    """The failure predictor's ROC curve against chance."""
    fig, ax = plt.subplots(figsize=(4.5, 4.5))
    ax.plot(fpr, tpr, lw=1.2, label=f"failure predictor (AUC {auc:.3f})")
    ax.plot([0, 1], [0, 1], color="grey", lw=0.8, ls="--", label="chance")
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.set_title(f"fails within {horizon_h:g} h, per reading", fontsize=9)
    ax.legend(fontsize=8, loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)


def plot_leads(path: Path, leads_h: list[float], missed: int, horizon_h: float) -> None:
    """Histogram of warning lead times; failures never warned are counted in the title."""
    fig, ax = plt.subplots(figsize=(6, 3.5))
    top = max([horizon_h, *leads_h]) if leads_h else horizon_h
    ax.hist(leads_h, bins=np.linspace(0, np.ceil(top), 25), color="#1f77b4")
    ax.axvline(horizon_h, color="black", lw=0.8, ls="--", label=f"horizon {horizon_h:g} h")
    ax.set_xlabel("hours from first maintenance_due to failure")
    ax.set_ylabel("failures")
    ax.yaxis.set_major_locator(MaxNLocator(integer=True))
    ax.set_title(f"{len(leads_h)} failures warned, {missed} not warned", fontsize=9)
    ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=_DPI)
    plt.close(fig)
