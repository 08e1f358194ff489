"""Figures of ``tensorguard cluster`` and ``predict``: a 2-D PCA scatter of the standardised space."""

from __future__ import annotations

from typing import TYPE_CHECKING

import numpy as np

from tensorguard.clustering import UNKNOWN, FamilyClassifier, UnknownPrediction
from tensorguard.plots import PALETTE, new_figure

if TYPE_CHECKING:
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure
    from matplotlib.text import Text

MAX_LABEL = 30
MEMBER_PX, CENTER_PX, UNKNOWN_PX = 12.0, 30.0, 36.0  # marker sizes, in pixels at 120 dpi


def pca_2d(Z: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(mean, 2 x d components, explained-variance ratios) of ``Z`` (scikit-learn's PCA, whose
    signs are deterministic: each component's largest entry is positive)."""
    from sklearn.decomposition import PCA

    pca = PCA(n_components=min(2, *Z.shape)).fit(Z)
    comps, ratios = np.zeros((2, Z.shape[1])), np.zeros(2)
    comps[:len(pca.components_)] = pca.components_
    ratios[:len(pca.components_)] = np.nan_to_num(pca.explained_variance_ratio_)
    return pca.mean_, comps, ratios


def _short(name: str) -> str:
    return name if len(name) <= MAX_LABEL else name[:MAX_LABEL - 1] + "…"


def _overlap(box: np.ndarray, boxes: np.ndarray) -> float:
    """Total overlap area of ``box`` (x0, y0, x1, y1) with each of ``boxes``."""
    if not len(boxes):
        return 0.0
    w = np.minimum(box[2], boxes[:, 2]) - np.maximum(box[0], boxes[:, 0])
    h = np.minimum(box[3], boxes[:, 3]) - np.maximum(box[1], boxes[:, 1])
    return float((np.clip(w, 0, None) * np.clip(h, 0, None)).sum())


def _point(xy: np.ndarray) -> tuple[float, float]:
    return float(xy[0]), float(xy[1])


def _place_labels(ax: Axes, texts: list[Text], points: np.ndarray, marker_px: np.ndarray) -> None:
    """Put each label (in the order given) at the first free spot around its point, in pixels.

    Spots ring the point at growing distances; a spot is free when it overlaps no label placed
    before and no marker. Labels moved away from their point get a thin leader line.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg

    fig = ax.get_figure(root=True)
    assert fig is not None  # an Axes made by new_figure always has one
    canvas = fig.canvas if isinstance(fig.canvas, FigureCanvasAgg) else FigureCanvasAgg(fig)
    fig.draw_without_rendering()
    renderer = canvas.get_renderer()  # type: ignore[no-untyped-call]
    anchor = ax.transData.transform(points)
    frame = ax.get_window_extent(renderer)
    half = np.array(marker_px)[:, None] / 2
    markers = np.hstack([anchor - half, anchor + half])
    placed: list[np.ndarray] = []
    directions = [(0, 1), (0, -1), (1, 0), (-1, 0), (1, 1), (-1, 1), (1, -1), (-1, -1)]
    to_data = ax.transData.inverted()
    for t, (px, py), m in zip(texts, anchor, marker_px, strict=True):
        ext = t.get_window_extent(renderer)
        w, h = ext.width + 3, ext.height + 1
        best, best_cost = np.zeros(4), np.inf
        for r in (m / 2 + 2, m / 2 + 12, m / 2 + 26, m / 2 + 44, m / 2 + 70, m / 2 + 100):
            for dx, dy in directions:
                cx, cy = px + dx * (r + w / 2), py + dy * (r + h / 2)
                box = np.array([cx - w / 2, cy - h / 2, cx + w / 2, cy + h / 2])
                outside = (box[0] < frame.x0 or box[2] > frame.x1 or box[1] < frame.y0
                           or box[3] > frame.y1)
                cost = _overlap(box, np.array(placed).reshape(-1, 4)) + _overlap(box, markers)
                cost += 1e6 * outside
                if cost < best_cost:
                    best, best_cost = box, cost
                if cost == 0:
                    break
            if best_cost == 0:
                break
        placed.append(best)
        cx, cy = (best[0] + best[2]) / 2, (best[1] + best[3]) / 2
        t.set_position(_point(to_data.transform((cx, cy))))
        t.set_horizontalalignment("center")
        t.set_verticalalignment("center")
        if np.hypot(cx - px, cy - py) > m / 2 + 16 + max(w, h) / 2:
            ax.annotate("", xy=_point(to_data.transform((px, py))),
                        xytext=_point(to_data.transform((cx, cy))),
                        arrowprops={"arrowstyle": "-", "color": "#777777", "lw": 0.5, "shrinkA": 0,
                                    "shrinkB": m / 4}, zorder=1)


def _label_order(model: FamilyClassifier) -> list[int]:
    """Centers first, then the other members: important labels get the best spots."""
    return sorted(range(len(model.members_)), key=lambda i: (not model.members_[i].is_center, i))


def _marker_px(model: FamilyClassifier) -> np.ndarray:
    """Approximate marker sizes in pixels (stars for centers are larger)."""
    return np.array([CENTER_PX if m.is_center else MEMBER_PX for m in model.members_], dtype=float)


def _scatter(ax: Axes, model: FamilyClassifier, xy: np.ndarray, alpha: float) -> None:
    index = {c.name: i for i, c in enumerate(model.clusters_)}
    for c in model.clusters_:
        rows = [i for i, m in enumerate(model.members_) if m.cluster == c.name]
        colour = PALETTE[index[c.name] % len(PALETTE)]
        ax.scatter(xy[rows, 0], xy[rows, 1], s=70, color=colour, edgecolor="black", linewidth=0.6,
                   alpha=alpha, label=f"{c.name} ({len(rows)})", zorder=2)
    centers = [i for i, m in enumerate(model.members_) if m.is_center]
    ax.scatter(xy[centers, 0], xy[centers, 1], marker="*", s=380, facecolor="none",
               edgecolor="black", linewidth=1.4, label="center model", zorder=3)


def _frame(ax: Axes, xy: np.ndarray, ratios: np.ndarray, title: str) -> None:
    span = np.ptp(xy, axis=0)
    span = np.where(span > 0, span, 1.0)
    ax.set_xlim(xy[:, 0].min() - 0.12 * span[0], xy[:, 0].max() + 0.12 * span[0])
    ax.set_ylim(xy[:, 1].min() - 0.1 * span[1], xy[:, 1].max() + 0.14 * span[1])
    ax.set_xlabel(f"principal component 1 ({ratios[0]:.1%} of variance)")
    ax.set_ylabel(f"principal component 2 ({ratios[1]:.1%} of variance)")
    ax.set_title(title)
    ax.grid(True, linestyle="--", alpha=0.4)


def cluster_figure(model: FamilyClassifier) -> Figure:
    """PCA scatter of the clustering set: one colour per cluster, centers starred, every model named."""
    Z = model.member_vectors()
    mean, comps, ratios = pca_2d(Z)
    xy = (Z - mean) @ comps.T
    fig = new_figure(12, 9)
    ax = fig.add_subplot()
    _scatter(ax, model, xy, alpha=0.9)
    _frame(ax, xy, ratios, f"Model families: {model.method} clustering of {len(model.members_)} "
                           f"fingerprints around {len(model.centers_)} center models")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), title="cluster (models)", fontsize=8)
    order = _label_order(model)
    texts = [ax.text(*_point(xy[i]), _short(model.members_[i].name), fontsize=7, zorder=4) for i in order]
    _place_labels(ax, texts, xy[order], _marker_px(model)[order])
    return fig


def prediction_figure(model: FamilyClassifier, prediction: UnknownPrediction, z: np.ndarray) -> Figure:
    """The known clusters in PCA space with the predicted model starred in red and dashed lines to
    its nearest known models (distances are measured in all 14 standardised dimensions)."""
    Z = model.member_vectors()
    mean, comps, ratios = pca_2d(Z)
    xy = (Z - mean) @ comps.T
    u = (np.asarray(z) - mean) @ comps.T
    fig = new_figure(12, 9)
    ax = fig.add_subplot()
    _scatter(ax, model, xy, alpha=0.6)
    index = {m.name: i for i, m in enumerate(model.members_)}
    for n in prediction.neighbors:
        ax.plot([u[0], xy[index[n.model], 0]], [u[1], xy[index[n.model], 1]], linestyle="--",
                color="#D62728", linewidth=0.8, alpha=0.7, zorder=1)
    ax.scatter([u[0]], [u[1]], marker="*", s=520, color="#D62728", edgecolor="black", linewidth=1.2,
               label=f"predicted: {_short(prediction.model)}", zorder=5)
    answer = ("unknown" if prediction.verdict == UNKNOWN else f"base {prediction.verdict}"
              + (f", confidence {prediction.confidence:.0%}" if prediction.confidence is not None else ""))
    _frame(ax, np.vstack([xy, u]), ratios,
           f"{prediction.model}: {answer} (rule {prediction.rule}; distance {prediction.distance:.3g}, "
           f"threshold {prediction.threshold:.3g})")
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), title="cluster (models)", fontsize=8)
    order = _label_order(model)
    texts = [ax.text(*_point(u), _short(prediction.model), fontsize=10, weight="bold", color="#D62728",
                     zorder=6)]
    texts += [ax.text(*_point(xy[i]), _short(model.members_[i].name), fontsize=7, zorder=4, alpha=0.85)
              for i in order]
    _place_labels(ax, texts, np.vstack([u, xy[order]]),
                  np.concatenate([[UNKNOWN_PX], _marker_px(model)[order]]))
    return fig
