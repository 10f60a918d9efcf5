"""Small matplotlib figures for models (PNG files), and their Markdown embedding.

Drawn by hand rather than with PyCaret's `plot_model` so they are fast, deterministic and need
no display: the model comparison, confusion matrix with ROC and precision-recall curves,
residuals, cluster map, SHAP importance and segment profiles.
"""

from __future__ import annotations

import base64
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import numpy as np
    import pandas as pd

DPI = 80


def _pyplot():
    import matplotlib

    matplotlib.use("Agg", force=True)
    import matplotlib.pyplot as plt

    # Some libraries (yellowbrick via PyCaret) ask for fonts that are not installed; matplotlib's
    # own DejaVu Sans always is.
    matplotlib.rcParams["font.family"] = "DejaVu Sans"

    return plt


def _save(fig, path: Path) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    _pyplot().close(fig)
    return path


def text_colour(rgba: tuple[float, ...]) -> str:
    """Black or white, whichever is more legible on a cell of colour `rgba` (WCAG relative
    luminance: white text below about 0.18, where black would fall under a 4.5 contrast)."""

    def linear(c: float) -> float:
        return c / 12.92 if c <= 0.04045 else ((c + 0.055) / 1.055) ** 2.4

    r, g, b = (linear(float(c)) for c in rgba[:3])
    luminance = 0.2126 * r + 0.7152 * g + 0.0722 * b
    return "white" if luminance < 0.179 else "black"


def markdown_image(path: Path, title: str = "") -> str:
    """A Markdown image with the PNG inlined (Dagster's UI renders it in asset metadata)."""
    data = base64.b64encode(Path(path).read_bytes()).decode()
    return f"![{title}](data:image/png;base64,{data})"


def model_comparison(leaderboard: pd.DataFrame, metric: str, path: Path) -> Path:
    """Horizontal bars of the cross-validated deciding metric per estimator."""
    plt = _pyplot()
    board = leaderboard.iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.5 * len(board) + 1.2))
    ax.barh(board["Model"], board[metric], color="#4878a8")
    for y, value in enumerate(board[metric]):
        ax.text(value, y, f" {value:.4f}", va="center", fontsize=8)
    ax.set_xlabel(f"{metric} (cross-validated)")
    ax.set_title("Model comparison")
    return _save(fig, path)


def confusion_and_roc(
    y: np.ndarray,
    score: np.ndarray,
    label: np.ndarray,
    path: Path,
    threshold: float | None = None,
) -> Path:
    """Confusion matrix (counts at the decision threshold), ROC and precision-recall curves of
    one classifier, the threshold's operating point marked on both curves."""
    import numpy as np
    from sklearn.metrics import (
        average_precision_score,
        confusion_matrix,
        precision_recall_curve,
        roc_auc_score,
        roc_curve,
    )

    plt = _pyplot()
    fig, (left, middle, right) = plt.subplots(1, 3, figsize=(13, 4))
    y = np.asarray(y).astype(int)
    label = np.asarray(label).astype(int)
    matrix = confusion_matrix(y, label, labels=[0, 1])
    image = left.imshow(matrix, cmap="Blues")
    left.grid(False)  # a style's grid would cross the cells
    for (i, j), count in np.ndenumerate(matrix):
        left.text(
            j,
            i,
            f"{count:,}",
            ha="center",
            va="center",
            color=text_colour(image.cmap(image.norm(count))),
            fontsize=12,
        )
    left.set_xticks([0, 1], ["0", "1"])
    left.set_yticks([0, 1], ["0", "1"])
    left.set_xlabel("predicted")
    left.set_ylabel("actual")
    left.set_title(
        "Confusion matrix" + (f" at threshold {threshold:.3f}" if threshold is not None else "")
    )
    fpr, tpr, _ = roc_curve(y, score)
    middle.plot(fpr, tpr, label=f"AUC {roc_auc_score(y, score):.3f}")
    middle.plot([0, 1], [0, 1], "--", color="grey", linewidth=0.8)
    precision, recall, _ = precision_recall_curve(y, score)
    right.plot(recall, precision, label=f"PR-AUC {average_precision_score(y, score):.3f}")
    right.axhline(y.mean(), linestyle="--", color="grey", linewidth=0.8, label="base rate")
    positives, negatives = max(int(y.sum()), 1), max(int((1 - y).sum()), 1)
    tp = int(((label == 1) & (y == 1)).sum())
    fp = int(((label == 1) & (y == 0)).sum())
    if label.sum():
        middle.plot(fp / negatives, tp / positives, "o", color="#c44e52", label="threshold")
        right.plot(tp / positives, tp / max(tp + fp, 1), "o", color="#c44e52", label="threshold")
    middle.set_xlabel("false positive rate")
    middle.set_ylabel("true positive rate")
    middle.set_title("ROC")
    middle.legend(loc="lower right")
    right.set_xlabel("recall")
    right.set_ylabel("precision")
    right.set_title("Precision-recall")
    right.legend(loc="upper right")
    return _save(fig, path)


def residuals(y: np.ndarray, prediction: np.ndarray, path: Path) -> Path:
    """Residuals against predictions, and predicted against actual."""
    plt = _pyplot()
    fig, (left, right) = plt.subplots(1, 2, figsize=(9, 4))
    left.scatter(prediction, y - prediction, s=4, alpha=0.3)
    left.axhline(0, color="grey", linewidth=0.8)
    left.set_xlabel("predicted")
    left.set_ylabel("residual (actual − predicted)")
    left.set_title("Residuals")
    right.scatter(y, prediction, s=4, alpha=0.3)
    low, high = float(min(y.min(), prediction.min())), float(max(y.max(), prediction.max()))
    right.plot([low, high], [low, high], "--", color="grey", linewidth=0.8)
    right.set_xlabel("actual")
    right.set_ylabel("predicted")
    right.set_title("Predicted vs actual")
    return _save(fig, path)


def cluster_map(x: pd.DataFrame, labels: np.ndarray, path: Path) -> Path:
    """The rows on their first two principal components, coloured by cluster."""
    from sklearn.decomposition import PCA

    plt = _pyplot()
    points = PCA(n_components=2, random_state=0).fit_transform(x.to_numpy(dtype=float))
    fig, ax = plt.subplots(figsize=(6, 5))
    scatter = ax.scatter(points[:, 0], points[:, 1], c=labels, s=5, cmap="tab10", alpha=0.6)
    ax.legend(*scatter.legend_elements(), title="cluster", fontsize=7, loc="best")
    ax.set_xlabel("PC 1")
    ax.set_ylabel("PC 2")
    ax.set_title("Clusters (first two principal components)")
    return _save(fig, path)


def holdout_comparison(
    names: list[str], values: list[float], metric: str, ci: tuple[float, float] | None, path: Path
) -> Path:
    """Candidate and champion on the held-out slice, with the improvement's interval."""
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6, 2.6))
    ax.barh(names[::-1], values[::-1], color=["#a8a8a8", "#4878a8"][: len(names)][::-1])
    for y, value in enumerate(values[::-1]):
        ax.text(value, y, f" {value:.4f}", va="center", fontsize=8)
    title = f"{metric} on the held-out slice"
    if ci is not None:
        title += f"  (improvement CI [{ci[0]:+.4f}, {ci[1]:+.4f}])"
    ax.set_title(title, fontsize=9)
    return _save(fig, path)


def importance_bars(importance: pd.DataFrame, path: Path, top: int = 15) -> Path:
    """Mean |SHAP value| per feature."""
    plt = _pyplot()
    board = importance.head(top).iloc[::-1]
    fig, ax = plt.subplots(figsize=(6, 0.35 * len(board) + 1.2))
    ax.barh(board["feature"], board["mean_abs_shap"], color="#d0603c")
    ax.set_xlabel("mean |SHAP value|")
    ax.set_title("Global feature importance")
    return _save(fig, path)


def beeswarm(explanation, path: Path, top: int = 15) -> Path:
    """SHAP's beeswarm of per-row contributions."""
    import shap

    plt = _pyplot()
    shap.plots.beeswarm(explanation, max_display=top, show=False)
    fig = plt.gcf()
    fig.set_size_inches(7, 0.35 * min(top, explanation.shape[1]) + 1.5)
    return _save(fig, path)


def segment_profiles(profile: pd.DataFrame, path: Path) -> Path:
    """Heat map of each segment's standardised feature means."""
    import numpy as np

    plt = _pyplot()
    values = profile.to_numpy(dtype=float)
    spread = values.std(axis=0)
    z = (values - values.mean(axis=0)) / np.where(spread > 0, spread, 1)
    fig, ax = plt.subplots(figsize=(1.0 * profile.shape[1] + 2, 0.5 * profile.shape[0] + 1.5))
    image = ax.imshow(z, cmap="RdBu_r", vmin=-2, vmax=2, aspect="auto")
    ax.grid(False)
    ax.set_xticks(range(profile.shape[1]), profile.columns, rotation=45, ha="right", fontsize=8)
    ax.set_yticks(range(profile.shape[0]), [str(i) for i in profile.index], fontsize=8)
    for (i, j), value in np.ndenumerate(values):
        colour = text_colour(image.cmap(image.norm(z[i, j])))
        ax.text(j, i, f"{value:.3g}", ha="center", va="center", fontsize=7, color=colour)
    ax.set_title("Segment profiles (colour: standardised mean)")
    return _save(fig, path)
