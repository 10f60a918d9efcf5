"""Clustering pieces that live inside saved pipelines (so they are importable without PyCaret)."""

from __future__ import annotations

from typing import Any

import numpy as np


class ClusterModel:
    """A fitted clusterer that can assign new rows.

    Estimators with `predict` (k-means, BIRCH) use it; the others (agglomerative, DBSCAN) assign
    a row to the nearest centroid of the clusters they found (DBSCAN's noise, -1, is no cluster).
    """

    def __init__(self, estimator: Any, x: Any) -> None:
        self.estimator = estimator
        labels = np.asarray(estimator.labels_)
        # PyCaret fits clusterers on float32 but its pipeline transforms new rows to float64;
        # scikit-learn's k-means refuses to mix them, so rows are cast back to the fitted dtype.
        self.dtype_ = np.asarray(x).dtype if np.asarray(x).dtype.kind == "f" else np.float64
        values = np.asarray(x, dtype=float)
        self.clusters_ = np.array(sorted(set(labels.tolist()) - {-1}))
        if len(self.clusters_) == 0:
            self.clusters_ = np.array([-1])
        self.centroids_ = np.vstack([values[labels == c].mean(axis=0) for c in self.clusters_])
        self.labels_ = labels
        self.n_features_in_ = values.shape[1]

    def fit(self, x: Any, y: Any = None) -> ClusterModel:
        return self

    def predict(self, x: Any) -> np.ndarray:
        if hasattr(self.estimator, "predict"):
            if hasattr(x, "astype"):
                x = x.astype(self.dtype_)
            return np.asarray(self.estimator.predict(x))
        values = np.asarray(x, dtype=float)
        distances = ((values[:, None, :] - self.centroids_[None, :, :]) ** 2).sum(axis=2)
        return self.clusters_[distances.argmin(axis=1)]

    @property
    def n_clusters(self) -> int:
        return int((self.clusters_ != -1).sum())
