"""The report's summary types: the aggregated table (:class:`Summary`), its names, its text cells and its pages
(``table.md``: :meth:`Summary.markdown`; ``report.html``, the figures embedded: :meth:`Summary.html_page`).

Below :mod:`benchxfer.report.figures` (which draws a Summary) and :mod:`benchxfer.report.write` (which makes one and
writes the files): pandas and numpy only, no matplotlib, no scipy.
"""

from __future__ import annotations

import base64
import html
from collections.abc import Sequence
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd

from benchxfer.trialdir import TrialState

# test name -> equal_var of scipy.stats.ttest_ind
TESTS: dict[str, bool] = {"welch": False, "student": True}
TEST_TITLES = {"welch": "Welch's t-test", "student": "Student's t-test"}
# (threshold, stars), strictest first
STAR_LEVELS: tuple[tuple[float, str], ...] = ((1e-4, "****"), (1e-3, "***"), (1e-2, "**"), (5e-2, "*"))
COLUMN_FIELDS = ("sweep", "dataset", "recipe", "shot", "lr", "metric")
SUMMARY_COLUMNS = ("sweep", "dataset", "recipe", "shot", "lr", "metric", "column", "init", "n", "mean",
                   "std", "ddof", "ci95_low", "ci95_high", "scale", "baseline", "test", "p_value", "stars", "best",
                   "n_failed", "n_unfinished")
# ddof -> how the tables name the std they print (the first study printed the population std, ddof 0)
STD_NAMES: dict[int, str] = {1: "sample std (ddof=1)", 0: "population std (ddof=0)"}
# the default: the studies' own ± (np.std, ddof 0: Version1/engine.py prints np.std over its runs); 1 is an option
DEFAULT_DDOF = 0


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
    ddof: int = DEFAULT_DDOF  # of the printed std; the 95 % CI always uses the sample std

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
        return (f"Test metric{scale}, mean ± {STD_NAMES[self.ddof]} over n={self.n_seeds} seeds "
                "(n shown where it differs); "
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

    def html_page(self, title: str, source: str, figures: Sequence[Any] = ()) -> str:
        """The report's page (``report.html``): the caption, the value and p-value tables, what was not averaged,
        and ``figures`` embedded (each a :class:`benchxfer.report.figures.FigureFile`: its ``png``, its ``path``)."""
        e = html.escape
        parts = [
            "<!doctype html><html><head><meta charset='utf-8'>", f"<title>{e(title)}</title>",
            "<style>body{font-family:sans-serif;margin:2em}table{border-collapse:collapse;margin:1em 0}"
            "td,th{border:1px solid #ccc;padding:4px 8px;text-align:center}img{max-width:100%}</style>",
            "</head><body>", f"<h1>{e(title)}</h1>", f"<p>Source: {e(source)}</p>",
            f"<p>{e(self.caption())}</p>", "<h2>Results</h2>", _html_table(self.cells("value", "html")),
        ]
        if self.baseline:
            parts += [f"<h2>p-values against {e(self.baseline)} ({e(TEST_TITLES[self.test])})</h2>",
                      _html_table(self.cells("p", "html").map(e))]
        parts += ["<h2>Not averaged</h2>", f"<p>{e(self.not_averaged_line())}</p>"]
        if self.n_shared:
            parts.append(f"<p><b>{e(self.shared_line())}</b></p>")
        if len(self.not_averaged):
            na = self.not_averaged.astype(object).where(self.not_averaged.notna(), "")
            parts.append(na.to_html(index=False, escape=True, na_rep=""))
        parts.append("<h2>Figures</h2>")
        for fig in figures:
            data = base64.b64encode(fig.png).decode("ascii")
            parts.append(f"<figure><img alt='{e(fig.path.name)}' src='data:image/png;base64,{data}'>"
                         f"<figcaption>{e(fig.path.name)}</figcaption></figure>")
        parts.append("</body></html>")
        return "\n".join(parts)

    def shared_line(self) -> str:
        return (f"Warning: {self.n_shared} trials share init, dataset, recipe, shot, lr and seed with another "
                "trial (they differ in overrides, which the run table does not hold) and are averaged together.")

    def not_averaged_line(self) -> str:
        counts = self.not_averaged["status"].value_counts()
        n_failed = int(counts.get(TrialState.FAILED.value, 0))
        n_unf = int(len(self.not_averaged) - n_failed)
        n_fin = int(self.table["n"].sum())
        return (f"{n_fin} finished trials averaged; not averaged: {n_failed} failed, "
                f"{n_unf} unfinished.")


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
