"""Failure predictor: the probability that a device fails within the horizon, from its trend.

Interface only for now (the trained model arrives with ``model.train``): with no artifact, or
for a metric set the artifact was not trained on, :meth:`FailureModel.predict` returns
``None`` and the response carries ``null``, never a made-up number.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

__all__ = ["ARTIFACT_NAME", "FailureModel", "load_failure_model"]

ARTIFACT_NAME = "failure.json"


class FailureModel:
    """Per metric set predictors loaded from ``failure.json``; empty means "no predictor"."""

    horizon_h: float = 24.0

    def predict(
        self, names: list[str], features: np.ndarray, ready: np.ndarray
    ) -> tuple[np.ndarray, np.ndarray] | None:
        """Return ``(probability, maintenance_due)`` per row, or ``None`` for an unknown set.

        Args:
            names: The device state's metric names (the columns ``features`` describe, see
                :func:`model.detector.trend_feature_names`).
            features: Trend features per reading, shape ``(n, F)``.
            ready: Per reading, whether the trend has enough history; rows that are not ready
                get NaN probability (``null`` in the response).
        """
        return None


def load_failure_model(model_dir: str | Path | None) -> FailureModel:
    """Load ``<model_dir>/failure.json``; an empty model when there is none."""
    return FailureModel()
