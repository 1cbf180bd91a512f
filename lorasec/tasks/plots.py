"""One figure style for every report section: Okabe-Ito colours (colour-blind safe) with a marker and a line
style per series (readable in grey print), means with 95% t-interval bands, the reference method as a band.

Figures are plain `matplotlib.figure.Figure` objects (no pyplot, no global backend): the report saves them as
png and svg and embeds the png in the HTML page.
"""

from __future__ import annotations

import contextlib
import math
import textwrap
from collections.abc import Iterator, Sequence

import matplotlib
from matplotlib.figure import Figure

from lorasec.tasks.evidence import Stats

OKABE_ITO = ("#000000", "#E69F00", "#56B4E9", "#009E73", "#0072B2", "#D55E00", "#CC79A7", "#F0E442")
MARKERS = ("o", "s", "^", "D", "v", "P", "X", "*")
LINESTYLES = ("-", "--", "-.", ":")
RC = {
    "font.size": 9, "axes.titlesize": 9, "axes.labelsize": 9, "legend.fontsize": 8, "xtick.labelsize": 8,
    "ytick.labelsize": 8, "axes.grid": True, "grid.alpha": 0.3, "axes.spines.top": False,
    "axes.spines.right": False, "figure.dpi": 100, "savefig.dpi": 150, "svg.fonttype": "path",
    "svg.hashsalt": "lorasec",  # the same figure gives the same svg bytes
    "text.parse_math": False,  # titles and legends carry config and data text: a `$` in a trigger is not TeX
}


@contextlib.contextmanager
def style() -> Iterator[None]:
    with matplotlib.rc_context(RC):
        yield


def series_style(i: int) -> dict:
    return {"color": OKABE_ITO[i % len(OKABE_ITO)], "marker": MARKERS[i % len(MARKERS)],
            "linestyle": LINESTYLES[i % len(LINESTYLES)]}


def panels(n: int, width: float = 3.6, height: float = 2.9, max_cols: int = 3) -> tuple[Figure, list]:
    """A figure of n panels (axes), at most max_cols per row."""
    cols = max(1, min(n, max_cols))
    rows = math.ceil(n / cols)
    fig = Figure(figsize=(width * cols, height * rows + 0.4), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False).ravel().tolist()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, axes[:n]


def mean_band(ax, xs: Sequence[float], ss: Sequence[Stats], label: str, i: int) -> None:
    """Means with 95% CI: error bars at every point and a shaded band between points."""
    pts = [(x, s) for x, s in zip(xs, ss, strict=True) if s.mean is not None]
    if not pts:
        return
    st = series_style(i)
    x = [p[0] for p in pts]
    m = [p[1].mean for p in pts]
    lo = [p[1].lo if p[1].lo is not None else p[1].mean for p in pts]
    hi = [p[1].hi if p[1].hi is not None else p[1].mean for p in pts]
    n = sorted({p[1].n for p in pts})
    ns = f"n={n[0]}" if len(n) == 1 else f"n={n[0]}-{n[-1]}"
    ax.errorbar(x, m, yerr=[[a - b for a, b in zip(m, lo, strict=True)], [b - a for a, b in zip(m, hi, strict=True)]],
                label=f"{label} ({ns})", capsize=3, linewidth=1.4, markersize=5, **st)
    if len(pts) > 1:
        ax.fill_between(x, lo, hi, color=st["color"], alpha=0.15, linewidth=0)


def loss_band(ax, curves: Sequence[Sequence[float]], label: str, i: int) -> None:
    """Training-loss curves of one series: their mean over seeds, and a min-max band when there are several."""
    if not curves:
        return
    import numpy as np

    t = min(len(c) for c in curves)
    arr = np.array([c[:t] for c in curves], dtype=float)
    st = series_style(i)
    steps = np.arange(1, t + 1)
    ax.plot(steps, arr.mean(0), color=st["color"], linestyle=st["linestyle"], linewidth=1.2,
            label=f"{label} (n={len(curves)})")
    if len(curves) > 1:
        ax.fill_between(steps, arr.min(0), arr.max(0), color=st["color"], alpha=0.12, linewidth=0)


def reference_band(ax, s: Stats, label: str) -> None:
    """The reference method (e.g. full fine-tuning) as a horizontal line with its 95% CI band."""
    if s.mean is None:
        return
    ax.axhline(s.mean, color="#555555", linestyle="--", linewidth=1.2, label=f"{label} (n={s.n})")
    if s.lo is not None and s.hi is not None:
        ax.axhspan(s.lo, s.hi, color="#999999", alpha=0.2, linewidth=0)


def finish(ax, title: str, xlabel: str, ylabel: str, legend: bool = True) -> None:
    ax.set_title(textwrap.fill(title, 52), loc="left")
    ax.set_xlabel(xlabel)
    ax.set_ylabel(ylabel)
    if legend and ax.get_legend_handles_labels()[0]:
        ax.legend(frameon=False)
