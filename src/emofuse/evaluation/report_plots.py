"""Figures of ``emofuse report`` as PNG bytes (matplotlib, Agg canvas; no pyplot, no global state).

* :func:`confusion_figure`: per experiment, the confusion matrix summed over folds × seeds, coloured and
  annotated by its row-normalised value (recall of the true class) with the count below;
* :func:`per_class_f1_figure`: per class, grouped bars of the F1 mean over runs (error bars: std, ``ddof = 1``);
* :func:`metric_boxplot`: box plot of a test metric (macro F1) over seeds / folds per experiment, every run as a
  dot (Kim & Kang 2022, Fig. 6/7);
* :func:`curves_figure`: per stage, train / validation loss per epoch for every run, and the validation
  metrics of classification stages.
"""

from __future__ import annotations

import io
import math
from collections.abc import Sequence

import numpy as np
from matplotlib.axes import Axes
from matplotlib.backends.backend_agg import FigureCanvasAgg
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from emofuse.evaluation.report_data import ExperimentRuns

__all__ = ["confusion_figure", "curves_figure", "metric_boxplot", "per_class_f1_figure", "png_bytes"]

_DPI = 100
#: Validation metrics drawn by :func:`curves_figure` (when logged).
_VAL_METRICS = ("val/macro_f1", "val/ua")


def png_bytes(fig: Figure) -> bytes:
    """The figure as PNG bytes (no timestamp metadata, so the same figure gives the same bytes)."""
    FigureCanvasAgg(fig)
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=_DPI, metadata={"Software": None})
    return buf.getvalue()


def _short(name: str, width: int = 28) -> str:
    return name if len(name) <= width else name[: width - 1] + "…"


def confusion_figure(exps: Sequence[ExperimentRuns]) -> bytes:
    """Row-normalised confusion matrices, one panel per experiment (up to three per row)."""
    n = len(exps)
    cols = min(n, 3)
    rows = math.ceil(n / cols)
    k = len(exps[0].classes)
    side = max(3.2, 0.75 * k + 1.6)
    fig = Figure(figsize=(side * cols + 0.6, side * rows), layout="constrained")
    axes = fig.subplots(rows, cols, squeeze=False)
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= n:
            ax.set_axis_off()
            continue
        exp = exps[i]
        cm = exp.confusion()
        totals = cm.sum(1, keepdims=True)
        norm = np.divide(cm, totals, out=np.zeros(cm.shape, dtype=float), where=totals > 0)
        image = ax.imshow(norm, vmin=0.0, vmax=1.0, cmap="Blues")
        for (r, c), v in np.ndenumerate(norm):
            ax.text(
                c,
                r,
                f"{v:.2f}\n({cm[r, c]})",
                ha="center",
                va="center",
                fontsize=8,
                color="white" if v > 0.6 else "black",
            )
        ax.set_xticks(range(k), exp.classes, rotation=45, ha="right", fontsize=8)
        ax.set_yticks(range(k), exp.classes, fontsize=8)
        ax.set_xlabel("predicted")
        ax.set_ylabel("true")
        ax.set_title(f"{_short(exp.name)}\n{len(exp.runs)} run(s), {int(cm.sum())} utterances", fontsize=9)
    if image is not None:
        fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="share of the true class")
    return png_bytes(fig)


def per_class_f1_figure(exps: Sequence[ExperimentRuns], key: str = "per_class_f1") -> bytes:
    """Grouped bars: per class, each experiment's mean F1 over its runs (error bars: std, ``ddof = 1``)."""
    classes = exps[0].classes
    k, n = len(classes), len(exps)
    fig = Figure(figsize=(min(16.0, max(6.0, 0.55 * k * n + 3)), 3.8), layout="constrained")
    ax = fig.subplots()
    width = 0.8 / n
    x = np.arange(k)
    for j, exp in enumerate(exps):
        values = np.array([[float(r.metrics.get(key, {}).get(c, 0.0)) for c in classes] for r in exp.runs])
        mean = values.mean(0)
        std = values.std(0, ddof=1) if len(values) > 1 else np.zeros(k)
        ax.bar(x + (j - (n - 1) / 2) * width, mean, width, yerr=std, capsize=3, label=_short(exp.name, 40))
    ax.set_xticks(x, classes)
    ax.set_ylim(0, 1.05)
    ax.set_ylabel("F1 (mean ± std over runs)")
    ax.grid(axis="y", alpha=0.3)
    ax.legend(fontsize=8, loc="upper left", bbox_to_anchor=(1.0, 1.0))  # outside: bars stay visible
    return png_bytes(fig)


def metric_boxplot(exps: Sequence[ExperimentRuns], key: str = "macro_f1", label: str = "macro F1") -> bytes:
    """Box plot of ``key`` over every fold × seed run, one box per experiment, the runs as dots."""
    fig = Figure(figsize=(max(4.5, 1.6 * len(exps) + 2), 3.8), layout="constrained")
    ax = fig.subplots()
    data = [exp.values(key) for exp in exps]
    ax.boxplot(data, widths=0.5, showmeans=True)
    rng = np.random.default_rng(0)
    for i, values in enumerate(data, 1):
        ax.scatter(i + rng.uniform(-0.08, 0.08, len(values)), values, s=14, color="black", alpha=0.7, zorder=3)
    ax.set_xticks(
        range(1, len(exps) + 1),
        [f"{_short(e.name, 20)}\n(n={len(d)})" for e, d in zip(exps, data, strict=True)],
        fontsize=8,
    )
    ax.set_ylabel(f"test {label}")
    ax.grid(axis="y", alpha=0.3)
    return png_bytes(fig)


def _num(v: str | None) -> float:
    try:
        return float(v) if v not in (None, "") else math.nan
    except ValueError:
        return math.nan


def _plot_series(ax: Axes, xs: list[float], ys: list[float], **kw: object) -> None:
    pts = [(x, y) for x, y in zip(xs, ys, strict=True) if not math.isnan(x) and not math.isnan(y)]
    if pts:
        ax.plot([p[0] for p in pts], [p[1] for p in pts], marker="o", markersize=3, **kw)  # type: ignore[arg-type]


def curves_figure(exp: ExperimentRuns) -> bytes | None:
    """Per stage, train (solid) and validation (dashed) loss per epoch of every run; validation metrics.

    Returns:
        The PNG, or ``None`` when no run has a ``curves.csv``.
    """
    runs = [r for r in exp.runs if r.curves]
    if not runs:
        return None
    stages: list[str] = []
    for r in runs:
        for row in r.curves:
            s = row.get("stage") or "train"
            if s not in stages:
                stages.append(s)
    columns = {c for r in runs for row in r.curves for c in row}
    metric_cols = [c for c in _VAL_METRICS if c in columns]
    panels = len(stages) + (1 if metric_cols else 0)
    fig = Figure(figsize=(4.2 * panels + 0.5, 3.4), layout="constrained")
    axes = fig.subplots(1, panels, squeeze=False)[0]
    colors = [f"C{i % 10}" for i in range(len(runs))]
    for si, stage in enumerate(stages):
        ax = axes[si]
        for r, color in zip(runs, colors, strict=True):
            rows = [row for row in r.curves if (row.get("stage") or "train") == stage]
            xs = [_num(row.get("epoch")) for row in rows]
            tag = f"{r.fold}/seed{r.seed}"
            _plot_series(ax, xs, [_num(row.get("train/loss")) for row in rows], color=color, label=f"{tag} train")
            _plot_series(ax, xs, [_num(row.get("val/loss")) for row in rows], color=color, ls="--", label=f"{tag} val")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title(f"stage {stage}: loss", fontsize=9)
        ax.set_xlabel("epoch")
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
    if metric_cols:
        ax = axes[-1]
        styles = ["-", "--", ":", "-."]
        for r, color in zip(runs, colors, strict=True):
            rows = [row for row in r.curves if any(row.get(c) for c in metric_cols)]
            xs = list(range(len(rows)))
            for ci, col in enumerate(metric_cols):
                _plot_series(
                    ax,
                    [float(x) for x in xs],
                    [_num(row.get(col)) for row in rows],
                    color=color,
                    ls=styles[ci % len(styles)],
                    label=f"{r.fold}/seed{r.seed} {col.removeprefix('val/')}",
                )
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_title("validation metrics", fontsize=9)
        ax.set_xlabel("epoch (classification stages)")
        ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if ax.lines:
            ax.legend(fontsize=6)
    fig.suptitle(_short(exp.name, 60), fontsize=10)
    return png_bytes(fig)
