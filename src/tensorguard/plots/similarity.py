"""Figures of ``compare`` with several models: a heatmap per signal and a dendrogram."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tensorguard.lineage import ComparisonMatrix, SignalMatrix
from tensorguard.plots import new_figure

if TYPE_CHECKING:
    from matplotlib.figure import Figure


def _values(signal: SignalMatrix) -> np.ndarray:
    return np.array([[np.nan if v is None else v for v in row] for row in signal.values], dtype=float)


def heatmap(signal: SignalMatrix, names: list[str]) -> Figure:
    """One signal as an annotated heatmap; closer pairs get the darker colour in every signal."""
    values = _values(signal)
    n = len(names)
    fig = new_figure(max(6.0, 1.0 + 0.9 * n), max(5.0, 0.8 + 0.75 * n))
    ax = fig.add_subplot()
    cmap = "viridis_r" if signal.higher_is_closer else "viridis"
    image = ax.imshow(np.ma.masked_invalid(values), cmap=cmap)
    fig.colorbar(image, ax=ax, label=f"{signal.description} (darker = closer)")
    finite = values[np.isfinite(values)]
    middle = (finite.min() + finite.max()) / 2 if finite.size else 0.0
    for i in range(n):
        for j in range(n):
            v = values[i, j]
            text = "n/a" if not np.isfinite(v) else f"{v:.3g}"
            dark = np.isfinite(v) and (v > middle if signal.higher_is_closer else v < middle)
            ax.text(j, i, text, ha="center", va="center", fontsize=8,
                    color="white" if dark else "black")
    ax.set_xticks(range(n), names, rotation=35, ha="right", fontsize=8)
    ax.set_yticks(range(n), names, fontsize=8)
    ax.set_xlabel("model")
    ax.set_ylabel("model")
    ax.set_title(f"Pairwise {signal.signal} signal: {signal.description}")
    return fig


def dendrogram(distances: SignalMatrix, names: list[str]) -> Figure:
    """Average-linkage hierarchical clustering of the models on a distance signal."""
    from scipy.cluster.hierarchy import dendrogram as draw
    from scipy.cluster.hierarchy import linkage
    from scipy.spatial.distance import squareform

    values = np.nan_to_num(_values(distances), nan=0.0)
    tree = linkage(squareform((values + values.T) / 2, checks=False), method="average")
    fig = new_figure(9, max(3.5, 0.5 * len(names) + 1.5))
    ax = fig.add_subplot()
    draw(tree, labels=names, orientation="right", ax=ax, color_threshold=0,
         above_threshold_color="#0072B2")
    ax.set_xlabel(distances.description)
    ax.set_title("Models clustered by fingerprint distance (average linkage)")
    return fig


def measured(result: ComparisonMatrix) -> list[SignalMatrix]:
    """The signals measured for at least one pair (those worth a heatmap)."""
    n = len(result.models)
    return [s for s in result.signals
            if any(s.values[i][j] is not None for i in range(n) for j in range(n) if i != j)]
