"""report figures: valid PNGs with the expected bars and lines; report.html embeds them."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchxfer.report import FIG_DPI, save_figures, summarise, write_report
from benchxfer.results import RunSet, frame_from_records

INITS = ["imagenet", "scratch", "chexpert"]
ORDER = ["imagenet", "chexpert", "scratch"]  # the baseline first, then by name


def fewshot_runs() -> pd.DataFrame:
    """3 inits x 2 datasets x (k=1, k=5, full) x 3 seeds; chexpert has no finished run at k=1 on 'b'."""
    rng = np.random.default_rng(7)
    recs = []
    for i, init in enumerate(INITS):
        for ds in ("a", "b"):
            for shot in (1, 5, None):
                for seed in range(3):
                    status = "failed" if (init, ds, shot) == ("chexpert", "b", 1) else "finished"
                    recs.append(dict(sweep="fs", trial_key=f"{init}-{ds}-{shot}-{seed}", recipe="bit-hyperrule",
                                     init=init, dataset=ds, task="multiclass", shot=shot, lr=1e-3, seed=seed,
                                     metric="accuracy", value=0.5 + 0.1 * i + 0.05 * (shot or 10) / 10
                                     + rng.normal(0, 0.01), status=status))
    return frame_from_records(recs)


@pytest.fixture(scope="module")
def figures(tmp_path_factory):
    summary = summarise(fewshot_runs(), baseline="imagenet")
    return summary, save_figures(summary, tmp_path_factory.mktemp("figs"))


def assert_png(path, figure):
    img = Image.open(path)
    img.load()
    assert img.format == "PNG"
    w, h = figure.get_size_inches() * FIG_DPI
    assert img.size == (round(w), round(h))
    pixels = np.asarray(img.convert("RGB"))
    assert pixels.std() > 10  # not blank
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 20  # bars, text, lines in several colours


def test_one_bar_chart_per_dataset_with_a_bar_per_init_and_column(figures):
    summary, files = figures
    bars = [f for f in files if f.kind == "bars"]
    assert [f.path.name for f in bars] == ["bars_a.png", "bars_b.png"]
    for f in bars:
        assert_png(f.path, f.figure)
    ax_a, ax_b = (f.figure.axes[0] for f in bars)
    assert len(ax_a.patches) == 3 * 3  # 3 inits x 3 columns (k=1, k=5, full)
    assert len(ax_b.patches) == 3 * 3 - 1  # chexpert has no finished run at k=1 on b
    # heights are the means of the summary, error bars its stds
    t = summary.table[(summary.table["dataset"] == "a") & (summary.table["n"] > 0)]
    assert sorted(p.get_height() for p in ax_a.patches) == pytest.approx(sorted(t["mean"]))
    assert [tick.get_text() for tick in ax_a.get_xticklabels()] == ["k=1", "k=5", "full"]


def test_stars_are_drawn_above_significant_bars(figures):
    summary, files = figures
    ax = next(f for f in files if f.path.name == "bars_a.png").figure.axes[0]
    t = summary.table[summary.table["dataset"] == "a"]
    expected = sorted(s for s in t["stars"] if s not in ("", "ns"))
    assert expected and sorted(txt.get_text() for txt in ax.texts) == expected


def test_shot_figures_one_line_per_init(figures):
    _, files = figures
    shots = [f for f in files if f.kind == "shots"]
    assert [f.path.name for f in shots] == ["shots_a.png", "shots_b.png"]
    for f in shots:
        assert_png(f.path, f.figure)
    ax = shots[0].figure.axes[0]
    assert [line.get_label() for line in ax.get_lines()] == ORDER
    assert len(ax.collections) == 3  # one std band per init
    assert list(ax.get_lines()[0].get_xdata()) == [1.0, 5.0]  # "full" is not a k
    # on b, chexpert has no finished k=1: its line has only the k=5 point
    ax_b = shots[1].figure.axes[0]
    assert [len(line.get_xdata()) for line in ax_b.get_lines()] == [2, 1, 2]


def test_no_shot_figures_without_few_shot_runs(tmp_path):
    df = fewshot_runs()
    full = df[df["shot"].isna()]
    files = save_figures(summarise(full), tmp_path)
    assert [f.kind for f in files] == ["bars", "bars", "heatmap"]
    ax = files[0].figure.axes[0]
    assert len(ax.patches) == 3 and [t.get_text() for t in ax.get_xticklabels()] == ORDER


def test_report_html_embeds_tables_and_figures(tmp_path):
    df = fewshot_runs()
    report = write_report(RunSet(df, "test", {"fs/chexpert-b-1-0": "OOM"}), tmp_path, title="few-shot")
    html = (tmp_path / "report.html").read_text()
    assert html.count("data:image/png;base64,") == len(report.figures) == 5
    assert "chexpert-b-1-0" in html and "OOM" in html  # the failed trial is listed with its error
    assert "<b>" in html and "few-shot" in html
    names = sorted(p.name for p in tmp_path.iterdir())
    assert names == sorted(["runs.parquet", "runs.csv", "summary.csv", "table.md", "report.html",
                            "bars_a.png", "bars_b.png", "shots_a.png", "shots_b.png", "heatmap_vs_baseline.png"])
    summary_csv = pd.read_csv(tmp_path / "summary.csv")
    assert len(summary_csv) == 3 * 2 * 3  # inits x datasets x shots
    Image.open(io.BytesIO(report.figures[0].png)).verify()
