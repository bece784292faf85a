"""report figures: valid PNGs with the expected bars and lines; report.html embeds them."""

from __future__ import annotations

import io

import numpy as np
import pandas as pd
import pytest
from PIL import Image

from benchxfer.report.figures import FIG_DPI, save_figures
from benchxfer.report.results import RunSet, frame_from_records
from benchxfer.report.write import summarise, write_report

pytestmark = pytest.mark.fast

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


def history_of(df: pd.DataFrame, epochs: dict[int, int]) -> pd.DataFrame:
    """Learning curves as the trials log them; seed -> epochs run (early stopping ends some sooner)."""
    rows = []
    for r in df.itertuples():
        for e in range(epochs[r.seed]):
            rows.append({"sweep": r.sweep, "trial_key": r.trial_key, "epoch": e,
                         "train_loss": 1.0 / (e + 1) + r.seed, "val_loss": 2.0 / (e + 1), "lr": 1e-3,
                         "val_accuracy": r.value - 0.1 / (e + 1)})
    return pd.DataFrame(rows)


@pytest.fixture(scope="module")
def every_figure(tmp_path_factory):
    df = fewshot_runs()
    summary = summarise(df, baseline="imagenet")
    files = save_figures(summary, tmp_path_factory.mktemp("all"), history_of(df, {0: 3, 1: 3, 2: 2}))
    return summary, df, files


def test_every_kind_is_drawn(every_figure):
    _, _, files = every_figure
    assert {f.kind for f in files} == {"bars", "shots", "curves", "heatmap"}
    assert [f.path.name for f in files if f.kind == "curves"] == [
        f"curves_{ds}-{k}-accuracy.png" for ds in ("a", "b") for k in ("k-1", "k-5", "full")]
    for f in files:
        assert_png(f.path, f.figure)


def test_no_text_is_cut_off(every_figure):
    """Every text artist (titles, labels, ticks, legends, stars, annotations) lies inside the canvas."""
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.text import Text

    _, _, files = every_figure
    for f in files:
        fig = f.figure
        FigureCanvasAgg(fig).draw()
        renderer = fig.canvas.get_renderer()
        w, h = fig.canvas.get_width_height()
        texts = [t for t in fig.findobj(Text) if t.get_visible() and t.get_text().strip()]
        assert len(texts) > 5, f.path.name
        # matplotlib keeps Text objects for ticks outside the view limits but does not draw them
        hidden = set()
        for ax in fig.axes:
            for axis in (ax.xaxis, ax.yaxis):
                lo, hi = sorted(axis.get_view_interval())
                for tick in axis.get_major_ticks() + axis.get_minor_ticks():
                    if not lo - 1e-9 * abs(hi - lo) <= tick.get_loc() <= hi + 1e-9 * abs(hi - lo):
                        hidden |= {id(tick.label1), id(tick.label2)}
        texts = [t for t in texts if id(t) not in hidden]
        for t in texts:
            box = t.get_window_extent(renderer)
            assert box.x0 >= -0.5 and box.y0 >= -0.5 and box.x1 <= w + 0.5 and box.y1 <= h + 0.5, \
                (f.path.name, t.get_text(), box.bounds, (w, h))


def test_bars_show_every_seed(every_figure):
    _, df, files = every_figure
    ax = next(f for f in files if f.path.name == "bars_a.png").figure.axes[0]
    (points,) = ax.collections[-1:]  # the scatter of seeds (the error bars come first)
    ys = sorted(points.get_offsets()[:, 1])
    a = df[(df["dataset"] == "a") & (df["status"] == "finished")]
    assert ys == pytest.approx(sorted(100 * a["value"]))
    assert len(ys) == 27  # 3 inits x 3 columns x 3 seeds


def test_heatmap_is_the_difference_from_the_baseline(every_figure):
    _, df, files = every_figure
    ax = next(f for f in files if f.kind == "heatmap").figure.axes[0]
    img = ax.get_images()[0].get_array()
    assert [t.get_text() for t in ax.get_yticklabels()] == ["chexpert", "scratch"]
    labels = [t.get_text() for t in ax.get_xticklabels()]
    fin = df[df["status"] == "finished"]
    for r, init in enumerate(["chexpert", "scratch"]):
        for c, label in enumerate(labels):
            ds, k = label.split(" / ")[0], label.split(" / ")[1].split(" ")[0]
            shot = None if k == "full" else int(k[2:])
            sel = fin[(fin["dataset"] == ds) & (fin["shot"].isna() if shot is None else fin["shot"].eq(shot))]
            mine, base = sel[sel["init"] == init]["value"], sel[sel["init"] == "imagenet"]["value"]
            if mine.empty:  # chexpert on b at k=1 failed: no cell
                assert img.mask[r, c]
            else:
                assert img[r, c] == pytest.approx(100 * (mine.mean() - base.mean()))


def test_learning_curves_are_mean_and_std_over_seeds(every_figure):
    files = every_figure[2]
    fig = next(f for f in files if f.path.name == "curves_a-full-accuracy.png").figure
    train, val_loss, val_metric = fig.axes
    assert [train.get_ylabel(), val_loss.get_ylabel(), val_metric.get_ylabel()] == [
        "train loss", "validation loss", "validation accuracy"]
    line = train.get_lines()[0]  # imagenet: seeds 0, 1 ran 3 epochs, seed 2 stopped after 2
    assert line.get_label() == "imagenet"
    assert list(line.get_xdata()) == [0, 1, 2]
    # train_loss = 1/(e+1) + seed: epochs 0-1 average seeds 0, 1, 2; epoch 2 only seeds 0 and 1
    assert list(line.get_ydata()) == pytest.approx([1 + 1, 0.5 + 1, 1 / 3 + 0.5])
    band = train.collections[0].get_paths()[0].vertices[:, 1]
    assert band.max() == pytest.approx(2 + np.std([1, 2, 3]))  # mean + np.std (ddof 0) of (1, 2, 3) at epoch 0
    assert "population std (ddof=0)" in fig._suptitle.get_text()
