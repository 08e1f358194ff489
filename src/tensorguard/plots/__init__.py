"""Every figure tensorguard draws, one module per command; this module holds the shared pieces.

Plot functions take results and return matplotlib figures; the application layer saves them."""

from __future__ import annotations

import io
from pathlib import Path
from typing import TYPE_CHECKING

from tensorguard.outputs import write_bytes_atomic

if TYPE_CHECKING:
    from matplotlib.figure import Figure

#: Colours for clusters, families and roles: colour-blind-safe first (Okabe-Ito), then tab20.
PALETTE = ("#0072B2", "#E69F00", "#009E73", "#D55E00", "#CC79A7", "#56B4E9", "#F0E442",
           "#000000", "#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b",
           "#e377c2", "#7f7f7f", "#bcbd22", "#17becf")
ROLE_COLOURS = {"attention": "#D55E00", "ffn": "#0072B2", "embedding": "#009E73",
                "norm": "#999999", "other": "#CC79A7"}


def new_figure(width: float = 10, height: float = 7) -> Figure:
    """A figure drawn off-screen (no display needed), never registered with pyplot."""
    from matplotlib.figure import Figure

    return Figure(figsize=(width, height), dpi=120, layout="constrained")


def png_bytes(fig: Figure) -> bytes:
    """``fig`` rendered as PNG."""
    buffer = io.BytesIO()
    fig.savefig(buffer, format="png")
    return buffer.getvalue()


def save_png(fig: Figure, path: str | Path, *, force: bool = False) -> Path:
    """Write ``fig`` as a PNG atomically; refuses to replace an existing file unless ``force``."""
    return write_bytes_atomic(path, png_bytes(fig), force=force)


def short_name(tensor: str) -> str:
    """A tensor name without the ``model.`` prefix and ``.weight`` suffix, for axis labels."""
    return tensor.removeprefix("model.").removesuffix(".weight")
