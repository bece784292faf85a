"""From the run table to the papers' tables and figures: mean ± std over seeds, t-tests, stars, HTML.

A *column* of the table is one dataset (with its metric), split further by whatever else varies
among the runs: the sweep (in ``compare``), the recipe, the shot k of few-shot sweeps, and the lr
when the lr is a grid axis (several lrs for the same init, dataset and seed; a tuned or fixed lr
is not a column). A *row* is one init. Only finished trials with a test value are averaged;
failed and unfinished trials are counted per cell and listed.
"""

from __future__ import annotations

import math
import warnings
from dataclasses import dataclass
from pathlib import Path

import matplotlib

matplotlib.use("Agg")
import numpy as np  # noqa: E402
import pandas as pd  # noqa: E402

from benchxfer.errors import BenchxferError  # noqa: E402
from benchxfer.report import figures  # noqa: E402
from benchxfer.report.figures import FigureFile  # noqa: E402
from benchxfer.report.results import DEFAULT_BASELINE, RunSet, write_runs  # noqa: E402
from benchxfer.report.summary import (  # noqa: E402,F401  (re-exported)
    COLUMN_FIELDS,
    DEFAULT_DDOF,
    STAR_LEVELS,
    STD_NAMES,
    SUMMARY_COLUMNS,
    TEST_TITLES,
    TESTS,
    Summary,
)
from benchxfer.train.metrics import higher_is_better, scale  # noqa: E402
from benchxfer.trialdir import TrialState  # noqa: E402


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
    from scipy import stats  # about 0.8 s of CPU to import: only where a test is computed

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", RuntimeWarning)
        return float(stats.ttest_ind(a, b, equal_var=equal_var).pvalue)


def _equal_var(test: str) -> bool:
    try:
        return TESTS[test]
    except KeyError:
        raise BenchxferError(f"unknown test {test!r}; allowed: {', '.join(TESTS)}") from None


def summarise(df: pd.DataFrame, baseline: str | None = DEFAULT_BASELINE, test: str = "welch",
              errors: dict[str, str] | None = None, ddof: int = DEFAULT_DDOF) -> Summary:
    """Aggregate a run table (results.RUN_COLUMNS) into the paper table; ``baseline=None``: no tests.

    ``ddof`` is that of the printed std: 0, the population std that the studies' code computed (default), or 1,
    the sample std. The 95 % confidence interval of the mean is Student's t with the sample std.
    """
    _equal_var(test)
    if ddof not in STD_NAMES:
        raise BenchxferError(f"ddof={ddof!r}; allowed: {', '.join(map(str, STD_NAMES))}")
    if df.empty:
        raise BenchxferError("no runs to summarise")
    inits_all = sorted(df["init"].dropna().unique())
    if baseline is not None and baseline not in inits_all:
        raise BenchxferError(f"baseline init {baseline!r} is not in the runs; inits: {', '.join(inits_all)}")
    inits = ([baseline] if baseline else []) + [i for i in inits_all if i != baseline]
    d = _with_columns(df)
    ok = d["status"].eq(TrialState.FINISHED.value).fillna(False) & d["value"].notna()
    fin = d[ok]
    groups = {k: g.to_numpy(dtype=float) for k, g in fin.groupby(["_col", "init"], sort=False)["value"]}
    bad = d[~ok]
    failed = bad["status"].eq(TrialState.FAILED.value).fillna(False)
    n_failed = bad[failed].groupby(["_col", "init"]).size().to_dict()
    n_unf = bad[~failed].groupby(["_col", "init"]).size().to_dict()
    cols = _column_table(d)
    rows = []
    for col in cols.itertuples():
        present = set(d.loc[d["_col"] == col.Index, "init"].dropna())
        base_vals = groups.get((col.Index, baseline)) if baseline else None
        for init in (i for i in inits if i in present):
            vals = groups.get((col.Index, init), np.empty(0))
            factor = scale(col.metric)  # x100 where the metric's registry entry says the papers print it so
            p = math.nan
            if baseline and init != baseline and base_vals is not None:
                p = ttest(vals, base_vals, test)
            lo, hi = ci95(vals)
            rows.append({
                **{f: getattr(col, f) for f in COLUMN_FIELDS}, "column": col.column, "init": init,
                "n": len(vals), "mean": vals.mean() * factor if len(vals) else math.nan,
                "std": vals.std(ddof=ddof) * factor if len(vals) > 1 else math.nan, "ddof": ddof,
                "ci95_low": lo * factor, "ci95_high": hi * factor, "scale": factor,
                "baseline": baseline, "test": test, "p_value": p, "stars": stars(p),
                "n_failed": n_failed.get((col.Index, init), 0), "n_unfinished": n_unf.get((col.Index, init), 0),
            })
    table = pd.DataFrame(rows)
    by_column = table.groupby("column", sort=False)["mean"]  # the best: the metric's entry says which way
    best = by_column.transform("max").where(table["metric"].map(higher_is_better), by_column.transform("min"))
    table["best"] = np.isclose(table["mean"], best, rtol=0, atol=1e-12) & table["mean"].notna()
    table = table.loc[:, list(SUMMARY_COLUMNS)]
    errors = errors or {}
    listed = bad.loc[:, ["sweep", "trial_key", "init", "dataset", "shot", "lr", "seed", "status"]].copy()
    listed["error"] = [errors.get(f"{s}/{k}", "") for s, k in zip(listed["sweep"], listed["trial_key"])]
    shared = int(fin.duplicated(["sweep", "init", "dataset", "recipe", "shot", "lr", "seed"], keep=False).sum())
    fin = fin.assign(column=fin["_col"].map(cols["column"])).drop(columns=["_col"])
    return Summary(table, cols.reset_index(drop=True), inits, baseline, test,
                   listed.reset_index(drop=True), fin, shared, ddof)


def ci95(vals: np.ndarray) -> tuple[float, float]:
    """The 95 % confidence interval of the mean: mean ± t(0.975, n-1) * s / sqrt(n), s the sample std. The
    quantile is ``scipy.special.stdtrit``, the function ``scipy.stats.t.ppf`` returns (scipy.stats, about 0.8 s of
    CPU to import, is needed only for a test)."""
    if len(vals) < 2:
        return math.nan, math.nan
    from scipy.special import stdtrit

    half = stdtrit(len(vals) - 1, 0.975) * vals.std(ddof=1) / math.sqrt(len(vals))
    return float(vals.mean() - half), float(vals.mean() + half)


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


# ------------------------------------------------------------------ the whole report

@dataclass
class Report:
    """What :func:`write_report` produced."""

    summary: Summary
    figures: list[FigureFile]
    files: list[Path]


def write_report(runs: RunSet, out_dir: str | Path, baseline: str | None = DEFAULT_BASELINE, test: str = "welch",
                 title: str = "benchxfer report", ddof: int = DEFAULT_DDOF, history: pd.DataFrame | None = None) -> Report:
    """Write runs.parquet/csv, summary.csv, table.md, the PNG figures and report.html into ``out_dir``.

    ``history``: the trials' learning curves (results.load_curves), drawn when given.
    """
    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
    except OSError as err:  # a file in the way, no permission: the user's --out
        raise BenchxferError(f"cannot create the report folder {out}: {err.strerror or err}") from None
    summary = summarise(runs.frame, baseline=baseline, test=test, errors=runs.errors, ddof=ddof)
    files = write_runs(runs.frame, out)
    summary_csv = out / "summary.csv"
    summary.table.to_csv(summary_csv, index=False)
    table_md = out / "table.md"
    table_md.write_text(f"# {title}\n\n{summary.markdown()}\n")
    drawn = figures.save_figures(summary, out, history)
    page = out / "report.html"
    page.write_text(summary.html_page(title, runs.source, drawn))
    files += [summary_csv, table_md, *(f.path for f in drawn), page]
    return Report(summary, drawn, files)


MANIFEST = ".benchxfer-report.json"  # in a report folder: the files benchxfer wrote there, with their SHA-256


def write_report_into(runs: RunSet, out_dir: str | Path, **kwargs) -> Report:
    """:func:`write_report` into a folder the user names (``report --out``): the report is written beside it
    first, then moved in; a file of the same name that benchxfer did not write there (not in the folder's
    ``.benchxfer-report.json`` with the same SHA-256) is never replaced: the whole report is refused in one line,
    and nothing in the folder changes."""
    import dataclasses
    import hashlib
    import json
    import os
    import shutil
    import tempfile

    out = Path(out_dir)
    try:
        out.mkdir(parents=True, exist_ok=True)
        staging = Path(tempfile.mkdtemp(prefix=".benchxfer-report-", dir=out))
    except OSError as err:  # a file in the way, no permission: the user's --out
        raise BenchxferError(f"cannot create the report folder {out}: {err.strerror or err}") from None

    def sha(path: Path) -> str:
        return hashlib.sha256(path.read_bytes()).hexdigest()

    try:
        rep = write_report(runs, staging, **kwargs)
        try:
            ours = json.loads((out / MANIFEST).read_text()).get("files", {})
        except (OSError, ValueError, AttributeError):
            ours = {}
        names = [p.name for p in rep.files]
        foreign = [n for n in names if (out / n).exists() and (not (out / n).is_file() or ours.get(n) != sha(out / n))]
        if foreign:
            raise BenchxferError(
                f"report folder {out}: {len(foreign)} file(s) of the report are already there and were not written "
                f"by benchxfer (or were changed since), the first: {out / foreign[0]}; nothing was replaced: give "
                "another --out, or move them away")
        ours = {n: h for n, h in ours.items() if (out / n).is_file()}
        for path in rep.files:
            ours[path.name] = sha(path)
            os.replace(path, out / path.name)
        (out / MANIFEST).write_text(json.dumps({"files": ours}, indent=1, sort_keys=True) + "\n")
    finally:
        shutil.rmtree(staging, ignore_errors=True)
    moved = [dataclasses.replace(f, path=out / f.path.name) for f in rep.figures]
    return dataclasses.replace(rep, figures=moved, files=[out / p.name for p in rep.files])
