"""The papers' figures from a :class:`benchxfer.report.summary.Summary`, drawn with matplotlib (Agg).

- ``bars``: per dataset a bar per init (mean, std error bar), every seed as a point, stars against the baseline;
- ``shots``: few-shot sweeps, the metric against k (log axis), one line per init with its ±std band;
- ``curves``: per column, learning curves over epochs (train loss, val loss, val metric), mean ± std over seeds;
- ``heatmap``: init x column, coloured by the difference of the mean from the baseline's.

Every figure uses matplotlib's constrained layout, so no label is cut off (tests/test_report_figures.py checks
each text's box against the canvas). Each function returns ``[(name, Figure)]``; the name is the PNG's stem.
``save_figures`` draws them all and writes each as a PNG (a :class:`FigureFile`), for the report.
"""

from __future__ import annotations

import io
import math
import re
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")
import numpy as np
import pandas as pd
from matplotlib.colors import TwoSlopeNorm
from matplotlib.figure import Figure
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from benchxfer.train.metrics import scale as printed_scale

if TYPE_CHECKING:
    from benchxfer.report.summary import Summary

FIG_DPI = 100


def _figure(w: float, h: float) -> Figure:
    return Figure(figsize=(w, h), dpi=FIG_DPI, layout="constrained")


def color(summary: Summary, init: str) -> str:
    """The same colour for an init in every figure; grey for the baseline."""
    if init == summary.baseline:
        return "0.5"
    return f"C{summary.inits.index(init) % 10}"


def slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "figure"


def _metric_label(metric: str, prefix: str = "test ") -> str:
    return f"{prefix}{metric}" + (" (x100)" if printed_scale(metric) == 100 else "")  # the metric's registry entry


def _figure_name(summary: Summary, sweep: str, dataset: str) -> str:
    return f"{sweep}_{dataset}" if summary.columns["sweep"].nunique() > 1 else str(dataset)


# ------------------------------------------------------------------ bars with seeds and stars

def bars(summary: Summary) -> list[tuple[str, Figure]]:
    """Per dataset (and sweep) one bar chart: a bar per init (and column), std error bars, each seed a point,
    and the stars of the t-test against the baseline above the bar.

    When the dataset has several columns (shots, recipes, lrs) the bars are grouped by column.
    """
    out = []
    t = summary.table[summary.table["n"] > 0]
    fin = summary.finished
    for (sweep, dataset), cols in summary.columns.groupby(["sweep", "dataset"], sort=False):
        part = t[t["column"].isin(set(cols["column"]))]
        inits = [i for i in summary.inits if i in set(part["init"])]
        grouped = len(cols) > 1
        fig = _figure(max(4.5, 1.4 + 0.5 * len(inits) * len(cols)), 4.0)
        ax = fig.add_subplot()
        width = 0.8 / len(inits) if grouped else 0.8
        group = {c: g for g, c in enumerate(cols["column"])}
        slot = {init: k for k, init in enumerate(inits)}

        def xpos(columns: pd.Series, init_names: pd.Series, slot=slot, group=group, width=width) -> np.ndarray:
            k = init_names.map(slot).to_numpy(dtype=float)
            if len(group) == 1:
                return k
            return columns.map(group).to_numpy(dtype=float) + (k - (len(slot) - 1) / 2) * width

        x = xpos(part["column"], part["init"])
        mean, std = part["mean"].to_numpy(dtype=float), part["std"].fillna(0).to_numpy(dtype=float)
        # one bar() call for all bars of the figure: per-init calls cost ~20 ms each
        ax.bar(x, mean, width=width * 0.9, yerr=std, capsize=2, color=[color(summary, i) for i in part["init"]],
               alpha=0.75, zorder=1)
        seeds = fin[fin["column"].isin(set(cols["column"])) & fin["init"].isin(slot)]
        scale = part["scale"].iloc[0] if len(part) else 1
        sx = xpos(seeds["column"], seeds["init"])
        # spread the seeds of one bar across its middle half, in seed order, so that equal values stay visible
        rank = seeds.groupby(["column", "init"]).cumcount().to_numpy(dtype=float)
        size = seeds.groupby(["column", "init"])["value"].transform("size").to_numpy(dtype=float)
        jitter = np.where(size > 1, (rank / np.maximum(size - 1, 1) - 0.5) * width * 0.45, 0.0)
        sy = seeds["value"].to_numpy(dtype=float) * scale
        ax.scatter(sx + jitter, sy, s=12, color="black", zorder=3, label="one seed")
        tops = {}
        for xi, m, s in zip(x, mean, std):
            tops[xi] = m + s
        for xi, v in zip(sx, sy):
            tops[xi] = max(tops.get(xi, v), v)
        for xi, st in zip(x, part["stars"]):
            if st and st != "ns":
                ax.annotate(st, (xi, tops[xi]), xytext=(0, 2), textcoords="offset points", ha="center",
                            va="bottom", fontsize=8)
        handles = [Line2D([], [], marker="o", ls="", color="black", markersize=3, label="one seed")]
        if grouped:
            ax.set_xticks(range(len(cols)), [_short_label(c, cols) for c in cols.itertuples()], fontsize=8)
            handles = [Patch(color=color(summary, i), label=i) for i in inits] + handles
        else:
            ax.set_xticks(range(len(inits)), inits, rotation=30, ha="right", fontsize=8)
        fig.legend(handles=handles, fontsize=7, ncols=min(len(handles), 5), loc="outside lower center",
                   frameon=False)
        metric = cols["metric"].iloc[0]
        ax.set_ylabel(f"{dataset}: " + _metric_label(metric))
        ax.set_title(_caption_line(summary, cols), fontsize=8)
        if len(part):
            lo = float(np.nanmin(np.concatenate([mean - std, sy])) if len(sy) else np.nanmin(mean - std))
            hi = float(np.nanmax(list(tops.values())))
            pad = (hi - lo) * 0.25 or abs(hi) * 0.05 or 1.0
            ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
        out.append((f"bars_{slug(_figure_name(summary, sweep, dataset))}", fig))
    return out


def _std_name(summary: Summary) -> str:
    from benchxfer.report.summary import STD_NAMES

    return STD_NAMES[summary.ddof]


def _caption_line(summary: Summary, cols: pd.DataFrame) -> str:
    title = cols["column"].iloc[0] if len(cols) == 1 else f"{cols['dataset'].iloc[0]} ({cols['metric'].iloc[0]})"
    base = f"; stars: vs {summary.baseline}" if summary.baseline else ""
    return f"{title}\nbars: mean ± {_std_name(summary)}{base}"


def _short_label(col, cols: pd.DataFrame) -> str:
    """A column's label within its dataset: only the fields that vary there (recipe, shot, lr, metric)."""
    parts = []
    if cols["recipe"].nunique(dropna=False) > 1:
        parts.append(str(col.recipe))
    if cols["shot"].nunique(dropna=False) > 1:
        parts.append("full" if pd.isna(col.shot) else f"k={int(col.shot)}")
    if cols["lr"].nunique(dropna=False) > 1 and not pd.isna(col.lr):
        parts.append(f"lr={col.lr:g}")
    if cols["metric"].nunique(dropna=False) > 1:
        parts.append(str(col.metric))
    return " / ".join(parts) or str(col.dataset)


# ------------------------------------------------------------------ few-shot curves

def shots(summary: Summary) -> list[tuple[str, Figure]]:
    """For few-shot runs: per dataset the metric against k (log axis), one line per init with a ±std band."""
    out = []
    t = summary.table[summary.table["shot"].notna() & (summary.table["n"] > 0)]
    if t.empty:
        return out
    for (sweep, dataset), part in t.groupby(["sweep", "dataset"], sort=False):
        panels = list(part.groupby(["recipe", "lr", "metric"], dropna=False, sort=False))
        panels = [(k, p) for k, p in panels if p["shot"].nunique() > 1]
        if not panels:
            continue
        fig, axes = _panels(len(panels), 4.2, 3.6)
        for ax, ((recipe, lr, metric), p) in zip(axes, panels):
            for init in (i for i in summary.inits if i in set(p["init"])):
                line = p[p["init"] == init].sort_values("shot")
                x = line["shot"].to_numpy(dtype=float)
                y, s = line["mean"].to_numpy(dtype=float), line["std"].fillna(0).to_numpy(dtype=float)
                c = color(summary, init)
                ax.plot(x, y, marker="o", label=init, color=c)
                ax.fill_between(x, y - s, y + s, alpha=0.2, color=c)
            ax.set_xscale("log")
            ks = sorted(int(k) for k in p["shot"].unique())
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_xlabel("k (examples per class, log scale)")
            ax.set_ylabel(_metric_label(metric))
            extra = [str(recipe)] if summary.columns["recipe"].nunique() > 1 else []
            extra += [f"lr={lr:g}"] if not pd.isna(lr) else []
            ax.set_title(" / ".join([str(dataset), *extra]), fontsize=9)
            ax.legend(fontsize=7)
        fig.suptitle(f"mean ± {_std_name(summary)} over seeds", fontsize=8)
        out.append((f"shots_{slug(_figure_name(summary, sweep, dataset))}", fig))
    return out


def _panels(n: int, w: float, h: float, ncols_max: int = 3) -> tuple[Figure, list]:
    ncols = min(n, ncols_max)
    nrows = math.ceil(n / ncols)
    fig = _figure(w * ncols, h * nrows)
    axes = fig.subplots(nrows, ncols, squeeze=False).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


# ------------------------------------------------------------------ learning curves

def curves(summary: Summary, history: pd.DataFrame) -> list[tuple[str, Figure]]:
    """Per column one figure of three panels over epochs: train loss, val loss and the val metric.

    ``history`` is long: ``sweep, trial_key, epoch`` and the logged columns (``train_loss``, ``val_loss``,
    ``val_<metric>``), as in each trial's learning_curves.csv. One line per init: the mean over its seeds at
    each epoch, with a ±std band of the summary's ddof (seeds that stopped early leave the later epochs to the others).
    """
    out: list[tuple[str, Figure]] = []
    if history is None or history.empty:
        return out
    fin = summary.finished.loc[:, ["sweep", "trial_key", "init", "column", "metric"]]
    h = history.merge(fin, on=["sweep", "trial_key"], how="inner")
    if h.empty:
        return out
    for col in summary.columns.itertuples():
        part = h[h["column"] == col.column]
        if part.empty:
            continue
        metric = str(col.metric)
        panels = [(c, t) for c, t in (("train_loss", "train loss"), ("val_loss", "validation loss"),
                                       (f"val_{metric}", f"validation {metric}")) if c in part and part[c].notna().any()]
        if not panels:
            continue
        fig, axes = _panels(len(panels), 3.6, 3.2)
        for ax, (c, label) in zip(axes, panels):
            for init in (i for i in summary.inits if i in set(part["init"])):
                g = part[part["init"] == init].groupby("epoch")[c]
                g = g.agg(mean="mean", std=lambda v: v.std(ddof=summary.ddof)).sort_index()
                x = g.index.to_numpy(dtype=float)
                y, s = g["mean"].to_numpy(dtype=float), g["std"].fillna(0).to_numpy(dtype=float)
                k = color(summary, init)
                ax.plot(x, y, label=init, color=k, marker="." if len(x) < 20 else None)
                ax.fill_between(x, y - s, y + s, alpha=0.2, color=k)
            ax.set_xlabel("epoch")
            ax.set_ylabel(label)
            ax.xaxis.get_major_locator().set_params(integer=True)
        axes[0].legend(fontsize=7)
        fig.suptitle(f"{col.column}: mean ± {_std_name(summary)} over seeds", fontsize=9)
        out.append((f"curves_{slug(col.column)}", fig))
    return out


# ------------------------------------------------------------------ heat map

def heatmap(summary: Summary) -> list[tuple[str, Figure]]:
    """Init x column, coloured by mean minus the baseline's mean in the same column (printed scale), each
    cell annotated with the difference and its stars. Needs a baseline and another init."""
    if not summary.baseline:
        return []
    t = summary.table
    base = t[t["init"] == summary.baseline].set_index("column")["mean"]
    others = [i for i in summary.inits if i != summary.baseline]
    cols = list(summary.columns["column"])
    if not others or not cols:
        return []
    t = t[t["init"].isin(others)].assign(diff=lambda d: d["mean"] - d["column"].map(base))
    diff = t.pivot(index="init", columns="column", values="diff").reindex(index=others, columns=cols)
    marks = t.pivot(index="init", columns="column", values="stars").reindex(index=others, columns=cols)
    vals = diff.to_numpy(dtype=float)
    if not np.isfinite(vals).any():
        return []
    fig = _figure(max(4.5, 2.5 + 1.1 * len(cols)), max(2.6, 1.4 + 0.45 * len(others)))
    ax = fig.add_subplot()
    lim = float(np.nanmax(np.abs(vals))) or 1.0
    im = ax.imshow(np.ma.masked_invalid(vals), cmap="RdBu", norm=TwoSlopeNorm(0.0, -lim, lim), aspect="auto")
    for (r, c), v in np.ndenumerate(vals):
        if np.isfinite(v):
            st = marks.iat[r, c]
            text = f"{v:+.2f}" + (f"\n{st}" if isinstance(st, str) and st and st != "ns" else "")
            ax.text(c, r, text, ha="center", va="center", fontsize=7,
                    color="white" if abs(v) > 0.6 * lim else "black")
    ax.set_xticks(range(len(cols)), cols, rotation=30, ha="right", fontsize=8)
    ax.set_yticks(range(len(others)), others, fontsize=8)
    scaled = "; x100 metrics in points" if (summary.table["scale"] == 100).any() else ""
    fig.colorbar(im, ax=ax, label=f"mean − {summary.baseline}")
    ax.set_title(f"Test mean minus the baseline ({summary.baseline}){scaled}; stars: t-test", fontsize=9)
    return [("heatmap_vs_baseline", fig)]


# ------------------------------------------------------------------ the report's PNG files

@dataclass
class FigureFile:
    """One saved figure: its path, its kind (one of FIGURE_KINDS), and the matplotlib Figure."""

    path: Path
    kind: str
    title: str
    figure: Figure
    png: bytes = field(repr=False, default=b"")


# kind -> how to draw it (the functions above); learning curves also need the trials' histories
FIGURE_KINDS = ("bars", "shots", "curves", "heatmap")


def save_figures(summary: Summary, out_dir: Path, history: pd.DataFrame | None = None) -> list[FigureFile]:
    """Draw and save every figure as PNG into ``out_dir`` (learning curves only when ``history`` is given)."""
    files = []
    drawn = {"bars": bars(summary), "shots": shots(summary),
             "curves": curves(summary, history) if history is not None else [],
             "heatmap": heatmap(summary)}
    for kind in FIGURE_KINDS:
        for name, fig in drawn[kind]:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=FIG_DPI)
            path = out_dir / f"{name}.png"
            path.write_bytes(buf.getvalue())
            title = fig.axes[0].get_title().split("\n")[0] if len(fig.axes) == 1 else name
            files.append(FigureFile(path, kind, title, fig, buf.getvalue()))
    return files
