"""Figures of ``tensorguard sensitivity``: one model's top layers; several models by depth and role."""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING

import numpy as np

from tensorguard.architectures import Role
from tensorguard.plots import ROLE_COLOURS, new_figure, short_name
from tensorguard.sensitivity import Metric, SensitivityResult, rounded_mean

if TYPE_CHECKING:
    from matplotlib.artist import Artist
    from matplotlib.axes import Axes
    from matplotlib.figure import Figure


def depth_profile(results: Sequence[SensitivityResult],
                  layer_role: str) -> tuple[list[int], list[list[float | None]]]:
    """Blocks and, per model, the mean ``mean`` score of its ``layer_role`` tensors in each block."""
    blocks = sorted({la.block for r in results for la in r.layers
                     if la.role == layer_role and la.block is not None})
    rows = []
    for r in results:
        by_block: dict[int, list[float]] = {}
        for la in r.layers:
            if la.role == layer_role and la.block is not None:
                by_block.setdefault(la.block, []).append(la.mean)
        rows.append([rounded_mean(by_block.get(b, ())) for b in blocks])
    return blocks, rows


def _metric_label(result: SensitivityResult) -> str:
    o = result.options
    kinds = o.kinds[0] if len(o.kinds) == 1 else f"mean of {len(o.kinds)} noise kinds"
    if o.metric is Metric.FORWARD:
        return f"next-token KL, times the median layer's ({kinds})"
    return f"{o.metric} score ({kinds})"


def _logarithmic(result: SensitivityResult, values: Sequence[float]) -> bool:
    """The forward metric's ratios to the median are drawn on a log scale (when all positive)."""
    return result.options.metric is Metric.FORWARD and min(values, default=0) > 0


def _bars(ax: Axes, result: SensitivityResult, count: int) -> None:
    layers = result.layers[:count]
    values = [la.mean for la in layers]
    y = np.arange(len(layers))
    ax.barh(y, values, color=[ROLE_COLOURS[la.role] for la in layers], height=0.7)
    ax.set_yticks(y, [short_name(la.name) for la in layers], fontsize=8)
    ax.set_ylim(len(layers) - 0.5, -0.5)  # rank 1 on top, rows aligned with the kind grid
    span = max(values + [result.options.threshold])
    logarithmic = _logarithmic(result, values)
    for yi, v in zip(y, values, strict=True):
        ax.text(v * 1.05 if logarithmic else v + span * 0.01, float(yi), f"{v:.3g}", va="center",
                fontsize=7)
    ax.axvline(result.options.threshold, color="#444444", linestyle="--", linewidth=1)
    if logarithmic:  # ratios to the median span decades
        ax.set_xscale("log")
        ax.set_xlim(min(values + [result.options.threshold]) / 1.5, span * 3)
    else:
        ax.set_xlim(0, span * 1.12)
    ax.set_xlabel(_metric_label(result))
    ax.grid(axis="x", linestyle=":", alpha=0.6)
    from matplotlib.lines import Line2D
    from matplotlib.patches import Patch

    present = [r.value for r in Role if any(la.role == r.value for la in layers)]
    handles: list[Artist] = [Patch(facecolor=ROLE_COLOURS[r], label=f"{r} layers") for r in present]
    handles.append(Line2D([], [], color="#444444", linestyle="--",
                          label=f"threshold {result.options.threshold:g}"))
    ax.legend(handles=handles, loc="lower right", fontsize=8)


def _kind_grid(ax: Axes, result: SensitivityResult, count: int) -> None:
    layers = result.layers[:count]
    kinds = result.options.kinds
    grid = np.array([[la.scores[k] for k in kinds] for la in layers])
    from matplotlib.colors import LogNorm

    norm = LogNorm() if _logarithmic(result, grid.ravel().tolist()) else None
    image = ax.imshow(grid, aspect="auto", cmap="viridis", norm=norm)
    ax.set_xticks(range(len(kinds)), [k.replace("_", "\n") for k in kinds], fontsize=7)
    ax.set_yticks([])
    for (i, j), v in np.ndenumerate(grid):
        middle = (np.sqrt(grid.min() * grid.max()) if norm is not None
                  else (grid.min() + grid.max()) / 2)
        colour = "white" if v < middle else "black"
        text = f"{v:.3g}" if norm is not None else f"{v:.2f}"
        ax.text(j, i, text, ha="center", va="center", fontsize=6, color=colour)
    ax.set_title("score per noise kind", fontsize=10)
    ax.figure.colorbar(image, ax=ax, shrink=0.6, label="score")


def layer_figure(result: SensitivityResult) -> Figure:
    """Horizontal bars of the top layers by mean score, coloured by role; per-kind grid beside."""
    count = min(result.options.top, len(result.layers))
    several = len(result.options.kinds) > 1
    fig = new_figure(15 if several else 10, max(4.0, 0.32 * count + 1.8))
    if several:
        left, right = fig.subplots(1, 2, width_ratios=[3, 2])
        _bars(left, result, count)
        _kind_grid(right, result, count)
    else:
        _bars(fig.subplots(), result, count)
    fig.suptitle(f"{result.model_name}: the {count} most sensitive of {len(result.layers)} layers")
    return fig


def depth_figure(results: Sequence[SensitivityResult]) -> Figure:
    """Per role, a heatmap of block depth x model of the mean score (blank where a model has none)."""
    roles = [r.value for r in Role
             if any(la.role == r.value and la.block is not None for res in results for la in res.layers)]
    fig = new_figure(12, 1.6 + max(1, len(roles)) * (0.45 * len(results) + 1.4))
    if not roles:
        ax = fig.subplots()
        ax.text(0.5, 0.5, "no layer of these models belongs to a numbered block", ha="center")
        ax.set_axis_off()
        return fig
    axes = np.atleast_1d(fig.subplots(len(roles), 1, squeeze=False)[:, 0])
    for ax, layer_role in zip(axes, roles, strict=True):
        blocks, rows = depth_profile(results, layer_role)
        grid = np.ma.masked_invalid(np.array([[np.nan if v is None else v for v in row] for row in rows],
                                             dtype=float).reshape(len(results), len(blocks)))
        from matplotlib.colors import LogNorm

        logarithmic = grid.count() > 0 and _logarithmic(results[0], grid.compressed().tolist())
        image = ax.imshow(grid, aspect="auto", cmap="magma", interpolation="nearest",
                          norm=LogNorm() if logarithmic else None)
        step = max(1, len(blocks) // 16)
        ax.set_xticks(range(0, len(blocks), step), [str(b) for b in blocks[::step]], fontsize=8)
        ax.set_yticks(range(len(results)), [r.model_name for r in results], fontsize=8)
        ax.set_ylabel("model")
        if grid.size <= 240 and grid.count():
            middle = (np.sqrt(grid.min() * grid.max()) if logarithmic
                      else (grid.min() + grid.max()) / 2)
            for (i, j), v in np.ndenumerate(grid.filled(np.nan)):
                if np.isfinite(v):
                    ax.text(j, i, f"{v:.2f}", ha="center", va="center", fontsize=7,
                            color="white" if v < middle else "black")
        ax.set_xlabel("block (layer depth); blank: the model has no such block")
        ax.set_title(f"{layer_role} layers: score per block (mean over tensors and noise kinds)")
        fig.colorbar(image, ax=ax, label=results[0].options.metric)
    fig.suptitle("Layer sensitivity by depth across models")
    return fig
