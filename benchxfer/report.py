"""From the run table to the papers' tables and figures: mean ± std over seeds, t-tests, stars, HTML.

A *column* of the table is one dataset (with its metric), split further by whatever else varies
among the runs: the sweep (in ``compare``), the recipe, the shot k of few-shot sweeps, and the lr
when the lr is a grid axis (several lrs for the same init, dataset and seed; a tuned or fixed lr
is not a column). A *row* is one init. Only finished trials with a test value are averaged;
failed and unfinished trials are counted per cell and listed.
"""

from __future__ import annotations

import base64
import html
import io
import math
import re
import warnings
from dataclasses import dataclass, field
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402
from matplotlib.figure import Figure  # noqa: E402
from matplotlib.patches import Patch  # noqa: E402
from scipy import stats  # noqa: E402

from benchxfer.errors import BenchxferError  # noqa: E402
from benchxfer.results import RunSet, write_runs  # noqa: E402

# metrics the papers print in percent
PERCENT_METRICS = frozenset({"auroc", "accuracy", "dice", "dice_per_image", "iou"})
# test name -> equal_var of scipy.stats.ttest_ind
TESTS: dict[str, bool] = {"welch": False, "student": True}
TEST_TITLES = {"welch": "Welch's t-test", "student": "Student's t-test"}
# (threshold, stars), strictest first
STAR_LEVELS: tuple[tuple[float, str], ...] = ((1e-4, "****"), (1e-3, "***"), (1e-2, "**"), (5e-2, "*"))
COLUMN_FIELDS = ("sweep", "dataset", "recipe", "shot", "lr", "metric")
SUMMARY_COLUMNS = ("sweep", "dataset", "recipe", "shot", "lr", "metric", "column", "init", "n", "mean",
                   "std", "scale", "baseline", "test", "p_value", "stars", "best", "n_failed", "n_unfinished")
FIG_DPI = 100


def stars(p: float) -> str:
    """The papers' significance marks: **** p<0.0001, *** p<0.001, ** p<0.01, * p<0.05, else ns."""
    if p is None or not np.isfinite(p):
        return ""
    return next((s for level, s in STAR_LEVELS if p < level), "ns")


def ttest(a: np.ndarray, b: np.ndarray, test: str = "welch") -> float:
    """Two-sided p-value of an independent two-sample t-test of ``a`` against ``b`` (NaN if undefined)."""
    equal_var = _equal_var(test)
    if len(a) < 2 or len(b) < 2:
        return math.nan
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=equal_var).pvalue)


def _equal_var(test: str) -> bool:
    try:
        return TESTS[test]
    except KeyError:
        raise BenchxferError(f"unknown test {test!r}; allowed: {', '.join(TESTS)}") from None


@dataclass
class Summary:
    """The aggregated table (tidy: one row per init x column) plus what was not averaged."""

    table: pd.DataFrame  # SUMMARY_COLUMNS
    columns: pd.DataFrame  # one row per column: COLUMN_FIELDS + label, in display order
    inits: list[str]
    baseline: str | None
    test: str
    not_averaged: pd.DataFrame  # failed / unfinished trials: sweep, trial_key, init, dataset, shot, status, error
    finished: pd.DataFrame = field(repr=False)  # the averaged runs
    n_shared: int = 0  # trials that share init, dataset, recipe, shot, lr and seed with another trial

    def cells(self, what: str = "value", markup: str = "md") -> pd.DataFrame:
        """Paper layout: inits x column labels. ``what`` is "value" (mean ± std) or "p" (p-value, stars)."""
        n_mode = self.n_seeds
        fmt = _value_cell if what == "value" else _p_cell
        text = [fmt(r, self.baseline, n_mode, markup) for r in self.table.itertuples(index=False)]
        out = self.table.assign(_cell=text).pivot(index="init", columns="column", values="_cell")
        return out.reindex(index=self.inits, columns=list(self.columns["column"])).fillna("").astype(object)

    @property
    def n_seeds(self) -> int:
        """The most common number of averaged seeds per cell."""
        n = self.table.loc[self.table["n"] > 0, "n"]
        return int(n.mode().max()) if len(n) else 0

    def caption(self) -> str:
        scale = " (x100)" if (self.table["scale"] == 100).any() else ""
        base = (f"; {TEST_TITLES[self.test]} against {self.baseline!r}: "
                "* p<0.05, ** p<0.01, *** p<0.001, **** p<0.0001, ns not significant") if self.baseline else \
            "; no baseline, no significance tests"
        return (f"Test metric{scale}, mean ± std over n={self.n_seeds} seeds (n shown where it differs); "
                f"best per column in bold{base}.")

    def markdown(self) -> str:
        """The value table, the p-value table and the list of trials that were not averaged."""
        parts = [self.caption(), "", _md_table(self.cells("value", "md"))]
        if self.baseline:
            parts += ["", f"p-values against {self.baseline!r} ({TEST_TITLES[self.test]}):", "",
                      _md_table(self.cells("p", "md"))]
        parts += ["", self.not_averaged_line()]
        if self.n_shared:
            parts.append(self.shared_line())
        return "\n".join(parts)

    def shared_line(self) -> str:
        return (f"Warning: {self.n_shared} trials share init, dataset, recipe, shot, lr and seed with another "
                "trial (they differ in overrides, which the run table does not hold) and are averaged together.")

    def not_averaged_line(self) -> str:
        counts = self.not_averaged["status"].value_counts()
        n_failed = int(counts.get("failed", 0))
        n_unf = int(len(self.not_averaged) - n_failed)
        n_fin = int(self.table["n"].sum())
        return (f"{n_fin} finished trials averaged; not averaged: {n_failed} failed, "
                f"{n_unf} unfinished.")


def summarise(df: pd.DataFrame, baseline: str | None = "imagenet", test: str = "welch",
              errors: dict[str, str] | None = None) -> Summary:
    """Aggregate a run table (results.RUN_COLUMNS) into the paper table; ``baseline=None``: no tests."""
    _equal_var(test)
    if df.empty:
        raise BenchxferError("no runs to summarise")
    inits_all = sorted(df["init"].dropna().unique())
    if baseline is not None and baseline not in inits_all:
        raise BenchxferError(f"baseline init {baseline!r} is not in the runs; inits: {', '.join(inits_all)}")
    inits = ([baseline] if baseline else []) + [i for i in inits_all if i != baseline]
    d = _with_columns(df)
    ok = d["status"].eq("finished").fillna(False) & d["value"].notna()
    fin = d[ok]
    groups = {k: g.to_numpy(dtype=float) for k, g in fin.groupby(["_col", "init"], sort=False)["value"]}
    bad = d[~ok]
    failed = bad["status"].eq("failed").fillna(False)
    n_failed = bad[failed].groupby(["_col", "init"]).size().to_dict()
    n_unf = bad[~failed].groupby(["_col", "init"]).size().to_dict()
    cols = _column_table(d)
    rows = []
    for col in cols.itertuples():
        present = set(d.loc[d["_col"] == col.Index, "init"].dropna())
        base_vals = groups.get((col.Index, baseline)) if baseline else None
        for init in (i for i in inits if i in present):
            vals = groups.get((col.Index, init), np.empty(0))
            scale = 100 if col.metric in PERCENT_METRICS else 1
            p = math.nan
            if baseline and init != baseline and base_vals is not None:
                p = ttest(vals, base_vals, test)
            rows.append({
                **{f: getattr(col, f) for f in COLUMN_FIELDS}, "column": col.column, "init": init,
                "n": len(vals), "mean": vals.mean() * scale if len(vals) else math.nan,
                "std": vals.std(ddof=1) * scale if len(vals) > 1 else math.nan, "scale": scale,
                "baseline": baseline, "test": test, "p_value": p, "stars": stars(p),
                "n_failed": n_failed.get((col.Index, init), 0), "n_unfinished": n_unf.get((col.Index, init), 0),
            })
    table = pd.DataFrame(rows)
    best = table.groupby("column", sort=False)["mean"].transform("max")
    table["best"] = np.isclose(table["mean"], best, rtol=0, atol=1e-12) & table["mean"].notna()
    table = table.loc[:, list(SUMMARY_COLUMNS)]
    errors = errors or {}
    listed = bad.loc[:, ["sweep", "trial_key", "init", "dataset", "shot", "lr", "seed", "status"]].copy()
    listed["error"] = [errors.get(f"{s}/{k}", "") for s, k in zip(listed["sweep"], listed["trial_key"])]
    shared = int(fin.duplicated(["sweep", "init", "dataset", "recipe", "shot", "lr", "seed"], keep=False).sum())
    return Summary(table, cols.reset_index(drop=True), inits, baseline, test,
                   listed.reset_index(drop=True), fin.drop(columns=["_col"]), shared)


def _with_columns(df: pd.DataFrame) -> pd.DataFrame:
    """Add ``_col``: the index of each run's column (see the module docstring)."""
    d = df.copy()
    # unfinished trials may not know their metric yet: it is the dataset's
    known = d.groupby(["sweep", "dataset"], dropna=False)["metric"].transform("first")
    d["metric"] = d["metric"].fillna(known)
    cell = ["sweep", "init", "dataset", "recipe", "shot", "seed"]
    lrs_per_cell = d.groupby(cell, dropna=False)["lr"].nunique()
    lr_axis = bool((lrs_per_cell > 1).any())
    d["lr"] = d["lr"] if lr_axis else np.nan
    d["_col"] = d.groupby(list(COLUMN_FIELDS), dropna=False, sort=False).ngroup()
    return d


def _column_table(d: pd.DataFrame) -> pd.DataFrame:
    """One row per column id, ordered (sweep as given, dataset, recipe, shot with full last, lr), labelled."""
    cols = d.groupby("_col")[list(COLUMN_FIELDS)].first()
    sweep_order = {s: i for i, s in enumerate(pd.unique(d["sweep"]))}
    cols["_s"] = cols["sweep"].map(sweep_order)
    cols = cols.sort_values(["_s", "dataset", "recipe", "shot", "lr"], na_position="last").drop(columns="_s")
    varies = {f: cols[f].nunique(dropna=False) > 1 for f in COLUMN_FIELDS}
    cols["column"] = [_label(r, varies) for r in cols.itertuples()]
    if cols["column"].duplicated().any():  # cannot happen with distinct keys, but never merge columns silently
        cols["column"] = cols["column"] + [f" #{i}" for i in range(len(cols))]
    return cols


def _label(col, varies: dict[str, bool]) -> str:
    parts = [str(col.sweep)] if varies["sweep"] else []
    parts.append(str(col.dataset))
    if varies["recipe"]:
        parts.append(str(col.recipe))
    if varies["shot"]:
        parts.append("full" if pd.isna(col.shot) else f"k={int(col.shot)}")
    if varies["lr"] and not pd.isna(col.lr):
        parts.append(f"lr={col.lr:g}")
    return " / ".join(parts) + f" ({col.metric})"


def _fmt(x: float, scale: int) -> str:
    if not np.isfinite(x):
        return "–"
    return f"{x:.2f}" if scale == 100 else f"{x:.4f}"


def _value_cell(r, baseline: str | None, n_mode: int, markup: str) -> str:
    if r.n == 0:
        text = "–"
    else:
        text = _fmt(r.mean, r.scale) + (f" ± {_fmt(r.std, r.scale)}" if r.n > 1 else "")
        if r.best:
            text = f"**{text}**" if markup == "md" else f"<b>{html.escape(text)}</b>"
        elif markup == "html":
            text = html.escape(text)
        if r.stars and r.stars != "ns":
            text += f" {r.stars}"
    notes = []
    if r.n != n_mode:
        notes.append(f"n={r.n}")
    if r.n_failed:
        notes.append(f"{r.n_failed} failed")
    if r.n_unfinished:
        notes.append(f"{r.n_unfinished} unfinished")
    return text + (f" ({', '.join(notes)})" if notes else "")


def _p_cell(r, baseline: str | None, n_mode: int, markup: str) -> str:
    if r.init == baseline:
        return "baseline"
    if not np.isfinite(r.p_value):
        return "–"
    p = f"{r.p_value:.1e}" if r.p_value < 1e-3 else f"{r.p_value:.3f}"
    return f"{p} {r.stars}"


def _md_table(cells: pd.DataFrame) -> str:
    header = ["init", *cells.columns]
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join(["---"] + [":---:"] * len(cells.columns)) + "|"]
    for init, row in cells.iterrows():
        lines.append("| " + " | ".join([str(init), *(str(v).replace("|", "\\|") for v in row)]) + " |")
    return "\n".join(lines)


def _html_table(cells: pd.DataFrame) -> str:
    head = "".join(f"<th>{html.escape(str(c))}</th>" for c in ["init", *cells.columns])
    body = "".join(
        "<tr><th>" + html.escape(str(init)) + "</th>" + "".join(f"<td>{v}</td>" for v in row) + "</tr>"
        for init, row in cells.iterrows())
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


# ------------------------------------------------------------------ figures

@dataclass
class FigureFile:
    """One saved figure: its path, its kind ("bars" or "shots"), and the matplotlib Figure."""

    path: Path
    kind: str
    title: str
    figure: Figure
    png: bytes = field(repr=False, default=b"")


def bar_figures(summary: Summary) -> list[tuple[str, Figure]]:
    """Per dataset (and sweep) one bar chart: a bar per init with std error bars and stars.

    When the dataset has several columns (shots, recipes, lrs) the bars are grouped by column,
    one group per column, so that one figure still shows the whole dataset.
    """
    out = []
    t = summary.table[summary.table["n"] > 0]
    many_sweeps = summary.columns["sweep"].nunique() > 1
    for (sweep, dataset), cols in summary.columns.groupby(["sweep", "dataset"], sort=False):
        part = t[t["column"].isin(set(cols["column"]))]
        inits = [i for i in summary.inits if i in set(part["init"])]
        fig = Figure(figsize=(max(4.5, 1.0 + 0.45 * len(inits) * len(cols)), 3.8), dpi=FIG_DPI)
        ax = fig.add_axes((0.12, 0.22, 0.84, 0.68))
        width = 0.8 / len(inits) if len(cols) > 1 else 0.8
        group = {c: g for g, c in enumerate(cols["column"])}
        slot = {init: k for k, init in enumerate(inits)}
        x = part["column"].map(group).to_numpy(dtype=float)
        k = part["init"].map(slot).to_numpy(dtype=float)
        x = x + (k - (len(inits) - 1) / 2) * width if len(cols) > 1 else k
        mean, std = part["mean"].to_numpy(dtype=float), part["std"].fillna(0).to_numpy(dtype=float)
        colors = [_color(summary, i) for i in part["init"]]
        # one bar() call for all bars of the figure: per-init calls cost ~20 ms each
        ax.bar(x, mean, width=width * 0.95, yerr=std, capsize=2, color=colors)
        for xi, top, st in zip(x, mean + std, part["stars"]):
            if st and st != "ns":
                ax.text(xi, top, st, ha="center", va="bottom", fontsize=7)
        if len(cols) > 1:
            ax.set_xticks(range(len(cols)), [_short_label(c, cols) for c in cols.itertuples()], fontsize=8)
            handles = [Patch(color=_color(summary, i), label=i) for i in inits]
            ax.legend(handles=handles, fontsize=7, ncols=min(len(inits), 5), loc="lower center", bbox_to_anchor=(0.5, 1.0),
                      frameon=False)
        else:
            ax.set_xticks(range(len(inits)), inits, rotation=30, ha="right", fontsize=8)
            ax.set_title(cols["column"].iloc[0], fontsize=9)
        metric = cols["metric"].iloc[0]
        ax.set_ylabel(f"{dataset}: test {metric}" + (" (x100)" if metric in PERCENT_METRICS else ""))
        if len(part):
            lo = float((part["mean"] - part["std"].fillna(0)).min())
            hi = float((part["mean"] + part["std"].fillna(0)).max())
            pad = (hi - lo) * 0.25 or abs(hi) * 0.05 or 1.0
            ax.set_ylim(max(0.0, lo - pad) if lo >= 0 else lo - pad, hi + pad)
        name = f"{sweep}_{dataset}" if many_sweeps else str(dataset)
        out.append((f"bars_{_slug(name)}", fig))
    return out


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


def shot_figures(summary: Summary) -> list[tuple[str, Figure]]:
    """For few-shot runs: per dataset the metric against k, one line per init with a ±std band."""
    out = []
    t = summary.table[summary.table["shot"].notna() & (summary.table["n"] > 0)]
    if t.empty:
        return out
    for (sweep, dataset), part in t.groupby(["sweep", "dataset"], sort=False):
        panels = list(part.groupby(["recipe", "lr", "metric"], dropna=False, sort=False))
        panels = [(k, p) for k, p in panels if p["shot"].nunique() > 1]
        if not panels:
            continue
        fig, axes = _panels(len(panels))
        for ax, ((recipe, lr, metric), p) in zip(axes, panels):
            for init in (i for i in summary.inits if i in set(p["init"])):
                line = p[p["init"] == init].sort_values("shot")
                x = line["shot"].to_numpy(dtype=float)
                y, s = line["mean"].to_numpy(dtype=float), line["std"].fillna(0).to_numpy(dtype=float)
                color = _color(summary, init)
                ax.plot(x, y, marker="o", label=init, color=color)
                ax.fill_between(x, y - s, y + s, alpha=0.2, color=color)
            if p["shot"].max() / p["shot"].min() >= 10:
                ax.set_xscale("log")
            ks = sorted(int(k) for k in p["shot"].unique())
            ax.set_xticks(ks, [str(k) for k in ks])
            ax.minorticks_off()
            ax.set_xlabel("k (examples per class)")
            ax.set_ylabel(f"test {metric}" + (" (x100)" if metric in PERCENT_METRICS else ""))
            extra = [str(recipe)] if summary.columns["recipe"].nunique() > 1 else []
            extra += [f"lr={lr:g}"] if not pd.isna(lr) else []
            ax.set_title(" / ".join([str(dataset), *extra]), fontsize=9)
            ax.legend(fontsize=7)
        name = f"{sweep}_{dataset}" if summary.columns["sweep"].nunique() > 1 else str(dataset)
        out.append((f"shots_{_slug(name)}", fig))
    return out


def _color(summary: Summary, init: str) -> str:
    """The same colour for an init in every figure; grey for the baseline."""
    if init == summary.baseline:
        return "0.5"
    return f"C{summary.inits.index(init) % 10}"


def _panels(n: int) -> tuple[Figure, list]:
    ncols = min(n, 3)
    nrows = math.ceil(n / ncols)
    # a fixed grid: a layout engine (constrained/tight) measures every text and costs ~0.4 s per figure
    fig = Figure(figsize=(4.2 * ncols, 3.6 * nrows), dpi=FIG_DPI)
    axes = fig.subplots(nrows, ncols, squeeze=False,
                        gridspec_kw={"left": 0.7 / (4.2 * ncols), "right": 1 - 0.15 / (4.2 * ncols),
                                     "bottom": 0.75 / (3.6 * nrows), "top": 1 - 0.35 / (3.6 * nrows),
                                     "wspace": 0.35, "hspace": 0.55}).ravel()
    for ax in axes[n:]:
        ax.set_visible(False)
    return fig, list(axes[:n])


def _slug(name: str) -> str:
    return re.sub(r"[^A-Za-z0-9._-]+", "-", name).strip("-") or "figure"


def save_figures(summary: Summary, out_dir: Path) -> list[FigureFile]:
    """Draw and save every figure as PNG into ``out_dir``."""
    files = []
    for kind, figs in (("bars", bar_figures(summary)), ("shots", shot_figures(summary))):
        for name, fig in figs:
            buf = io.BytesIO()
            fig.savefig(buf, format="png", dpi=FIG_DPI)
            path = out_dir / f"{name}.png"
            path.write_bytes(buf.getvalue())
            title = fig.axes[0].get_title() if len(fig.axes) == 1 else name
            files.append(FigureFile(path, kind, title, fig, buf.getvalue()))
    return files


# ------------------------------------------------------------------ the whole report

@dataclass
class Report:
    """What :func:`write_report` produced."""

    summary: Summary
    figures: list[FigureFile]
    files: list[Path]


def write_report(runs: RunSet, out_dir: str | Path, baseline: str | None = "imagenet", test: str = "welch",
                 title: str = "benchxfer report") -> Report:
    """Write runs.parquet/csv, summary.csv, table.md, the PNG figures and report.html into ``out_dir``."""
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission: the user's --out
        raise BenchxferError(f"cannot create the report folder {out}: {err.strerror or err}") from None
    summary = summarise(runs.frame, baseline=baseline, test=test, errors=runs.errors)
    files = write_runs(runs.frame, out)
    summary_csv = out / "summary.csv"
    summary.table.to_csv(summary_csv, index=False)
    table_md = out / "table.md"
    table_md.write_text(f"# {title}\n\n{summary.markdown()}\n")
    figures = save_figures(summary, out)
    page = out / "report.html"
    page.write_text(_html_page(summary, figures, title, runs.source))
    files += [summary_csv, table_md, *(f.path for f in figures), page]
    return Report(summary, figures, files)


def _html_page(summary: Summary, figures: list[FigureFile], title: str, source: str) -> str:
    e = html.escape
    parts = [
        "<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
        "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
        "td,th{border:1px solid #ccc;padding:4px 8px;text-align:center}img{max-width:100%}</style>",
        "</head><body>", f"<h1>{e(title)}</h1>", f"<p>Source: {e(source)}</p>",
        f"<p>{e(summary.caption())}</p>", "<h2>Results</h2>", _html_table(summary.cells("value", "html")),
    ]
    if summary.baseline:
        parts += [f"<h2>p-values against {e(summary.baseline)} ({e(TEST_TITLES[summary.test])})</h2>",
                  _html_table(summary.cells("p", "html").map(e))]
    parts += ["<h2>Not averaged</h2>", f"<p>{e(summary.not_averaged_line())}</p>"]
    if summary.n_shared:
        parts.append(f"<p><b>{e(summary.shared_line())}</b></p>")
    if len(summary.not_averaged):
        na = summary.not_averaged.astype(object).where(summary.not_averaged.notna(), "")
        parts.append(na.to_html(index=False, escape=True, na_rep=""))
    parts.append("<h2>Figures</h2>")
    for f in figures:
        data = base64.b64encode(f.png).decode("ascii")
        parts.append(f"<figure><img alt='{e(f.path.name)}' src='data:image/png;base64,{data}'>"
                     f"<figcaption>{e(f.path.name)}</figcaption></figure>")
    parts.append("</body></html>")
    return "\n".join(parts)
