"""report.summarise: means, stds, t-tests and stars against values computed independently here."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from scipy.special import betainc

from benchxfer.errors import BenchxferError
from benchxfer.report.results import frame_from_records
from benchxfer.report.write import ci95, stars, summarise, ttest

pytestmark = pytest.mark.fast

# R's sleep data (Student 1908), and R's published output of t.test(extra ~ group, data = sleep):
# Welch: t = -1.8608, df = 17.776, p-value = 0.07939; var.equal = TRUE: df = 18, p-value = 0.07919.
SLEEP_1 = np.array([0.7, -1.6, -0.2, -1.2, -0.1, 3.4, 3.7, 0.8, 0.0, 2.0])
SLEEP_2 = np.array([1.9, 0.8, 1.1, 0.1, -0.1, 4.4, 5.5, 1.6, 4.6, 3.4])


def p_by_hand(a: np.ndarray, b: np.ndarray, equal_var: bool) -> float:
    """Two-sided t-test p-value from the textbook formulas; t-distribution tail via the incomplete beta."""
    na, nb = len(a), len(b)
    va, vb = a.var(ddof=1), b.var(ddof=1)
    if equal_var:
        sp2 = ((na - 1) * va + (nb - 1) * vb) / (na + nb - 2)
        se2, df = sp2 * (1 / na + 1 / nb), na + nb - 2
    else:
        se2 = va / na + vb / nb
        df = se2 ** 2 / ((va / na) ** 2 / (na - 1) + (vb / nb) ** 2 / (nb - 1))
    t = (a.mean() - b.mean()) / np.sqrt(se2)
    return float(betainc(df / 2, 0.5, df / (df + t * t)))


def stars_by_hand(p: float) -> str:
    return "****" if p < 1e-4 else "***" if p < 1e-3 else "**" if p < 1e-2 else "*" if p < 0.05 else "ns"


def test_ttest_matches_published_r_output():
    assert ttest(SLEEP_1, SLEEP_2, "welch") == pytest.approx(0.07939, abs=5e-6)
    assert ttest(SLEEP_1, SLEEP_2, "student") == pytest.approx(0.07919, abs=5e-6)
    assert p_by_hand(SLEEP_1, SLEEP_2, False) == pytest.approx(0.07939, abs=5e-6)


@pytest.mark.parametrize("p, expected", [(0.2, "ns"), (0.05, "ns"), (0.0499, "*"), (0.01, "*"), (0.0099, "**"),
                                         (0.001, "**"), (0.00099, "***"), (1e-4, "***"), (9.9e-5, "****"),
                                         (float("nan"), "")])
def test_stars(p, expected):
    assert stars(p) == expected


def test_ttest_needs_two_values_per_side():
    assert np.isnan(ttest(np.array([1.0]), np.array([1.0, 2.0])))
    with pytest.raises(BenchxferError, match="unknown test 'paired'; allowed: welch, student"):
        ttest(SLEEP_1, SLEEP_2, "paired")


# known values: dataset "nih" (auroc, printed x100) and "drive" (dice); 3 inits; scratch/nih has a failed
# trial whose value must not be averaged, and an unfinished one
VALUES = {
    ("imagenet", "nih"): [0.8170, 0.8155, 0.8190, 0.8162, 0.8181],
    ("scratch", "nih"): [0.8031, 0.8020, 0.8045, 0.8029],
    ("chexpert", "nih"): [0.8199, 0.8190, 0.8207, 0.8195, 0.8204],
    ("imagenet", "drive"): [0.7012, 0.7050, 0.6990, 0.7033, 0.7020],
    ("scratch", "drive"): [0.7101, 0.6950, 0.7080, 0.7010, 0.7120],
    ("chexpert", "drive"): [0.6990, 0.7000, 0.7060, 0.6970, 0.7040],
}


def known_runs() -> pd.DataFrame:
    recs = []
    for (init, ds), vals in VALUES.items():
        metric = "auroc" if ds == "nih" else "dice"
        for seed, v in enumerate(vals):
            recs.append(dict(sweep="s", trial_key=f"{init}-{ds}-{seed}", recipe="r", init=init, dataset=ds,
                             task="binary", lr=2e-4, seed=seed, metric=metric, value=v, status="finished"))
    recs.append(dict(sweep="s", trial_key="scratch-nih-8", recipe="r", init="scratch", dataset="nih", lr=2e-4,
                     seed=8, metric="auroc", value=0.99, status="failed"))  # a value that must not count
    recs.append(dict(sweep="s", trial_key="scratch-nih-9", recipe="r", init="scratch", dataset="nih", lr=2e-4,
                     seed=9, status="unfinished"))
    return frame_from_records(recs)


@pytest.mark.parametrize("test, equal_var", [("welch", False), ("student", True)])
def test_summary_matches_independent_computation(test, equal_var):
    s = summarise(known_runs(), baseline="imagenet", test=test, errors={"s/scratch-nih-8": "boom"})
    t = s.table.set_index(["init", "dataset"])
    assert s.inits == ["imagenet", "chexpert", "scratch"]
    for (init, ds), vals in VALUES.items():
        v = np.array(vals)
        row = t.loc[(init, ds)]
        assert row["n"] == len(v)
        assert row["mean"] == pytest.approx(100 * v.mean(), rel=1e-12)
        assert row["std"] == pytest.approx(100 * np.sqrt(((v - v.mean()) ** 2).sum() / len(v)), rel=1e-12)  # np.std, ddof 0
        if init == "imagenet":
            assert np.isnan(row["p_value"]) and row["stars"] == ""
        else:
            p = p_by_hand(v, np.array(VALUES[("imagenet", ds)]), equal_var)
            assert row["p_value"] == pytest.approx(p, rel=1e-9)
            assert row["stars"] == stars_by_hand(p)
    # the known data make these marks certain
    assert t.loc[("scratch", "nih"), "stars"] == "****"
    assert t.loc[("scratch", "drive"), "stars"] == "ns"
    assert t.loc[("scratch", "nih"), ["n_failed", "n_unfinished"]].tolist() == [1, 1]
    # best per column
    assert set(t.loc[t["best"]].index) == {("chexpert", "nih"), ("scratch", "drive")}
    # failed and unfinished are listed, not averaged
    listed = s.not_averaged.set_index("trial_key")
    assert listed.loc["scratch-nih-8", "status"] == "failed" and listed.loc["scratch-nih-8", "error"] == "boom"
    assert listed.loc["scratch-nih-9", "status"] == "unfinished"


def test_markdown_is_laid_out_like_the_papers():
    s = summarise(known_runs(), baseline="imagenet")
    md = s.markdown()
    lines = md.splitlines()
    header = next(line for line in lines if line.startswith("| init"))
    assert header == "| init | drive (dice) | nih (auroc) |"
    rows = {line.split(" | ")[0][2:]: line for line in lines if line.startswith("| ") and "init" not in line}
    chex = np.array(VALUES[("chexpert", "nih")]) * 100
    p_chex = p_by_hand(chex, np.array(VALUES[("imagenet", "nih")]) * 100, False)
    assert f"**{chex.mean():.2f} ± {np.std(chex):.2f}** {stars_by_hand(p_chex)}" in md  # the studies' np.std
    assert "(n=4, 1 failed, 1 unfinished)" in md  # scratch/nih averaged over 4 seeds, not 5
    assert "mean ± population std (ddof=0) over n=5 seeds" in lines[0] and "Welch" in lines[0]
    assert "| imagenet | baseline | baseline |" in md
    assert "29 finished trials averaged; not averaged: 1 failed, 1 unfinished" in md
    assert len(rows) >= 3


def test_no_baseline_means_no_tests():
    s = summarise(known_runs(), baseline=None)
    assert s.table["p_value"].isna().all() and "p-values" not in s.markdown()


def test_unknown_baseline_names_the_inits():
    with pytest.raises(BenchxferError, match="baseline init 'bit' is not in the runs; inits: chexpert, imagenet"):
        summarise(known_runs(), baseline="bit")


def test_lr_becomes_a_column_only_when_it_is_a_grid_axis():
    df = known_runs()
    tuned = df.assign(lr=np.linspace(1e-4, 1e-3, len(df)))  # one (tuned) lr per trial: not an axis
    assert summarise(tuned).columns["column"].tolist() == ["drive (dice)", "nih (auroc)"]
    grid = pd.concat([df, df.assign(lr=1e-3, trial_key=df["trial_key"] + "-lr")], ignore_index=True)
    cols = summarise(grid).columns["column"].tolist()
    assert cols == ["drive / lr=0.0002 (dice)", "drive / lr=0.001 (dice)", "nih / lr=0.0002 (auroc)",
                    "nih / lr=0.001 (auroc)"]


def test_shots_are_columns_with_full_last():
    df = known_runs()
    fs = pd.concat([df.assign(shot=pd.array([k] * len(df), dtype="Int64"), trial_key=df["trial_key"] + f"-{k}")
                    for k in (10, 1)] + [df], ignore_index=True)
    cols = summarise(fs).columns
    assert cols.loc[cols["dataset"] == "nih", "column"].tolist() == ["nih / k=1 (auroc)", "nih / k=10 (auroc)",
                                                                     "nih / full (auroc)"]


def test_trials_that_differ_only_in_overrides_are_flagged():
    df = known_runs()
    assert summarise(df).n_shared == 0 and "Warning" not in summarise(df).markdown()
    twice = pd.concat([df, df.assign(trial_key=df["trial_key"] + "-policy-b")], ignore_index=True)
    s = summarise(twice)
    assert s.n_shared == 2 * 29
    assert "Warning: 58 trials share init, dataset, recipe, shot, lr and seed" in s.markdown()


def test_population_std_by_default_sample_std_on_request_and_named_in_every_table():
    """The studies' ± is np.std (ddof 0; Version1/engine.py); the CI stays Student's with the sample std."""
    s = summarise(known_runs(), baseline="imagenet")
    t = s.table.set_index(["init", "dataset"])
    v = np.array(VALUES[("chexpert", "nih")])
    row = t.loc[("chexpert", "nih")]
    assert row["std"] == pytest.approx(100 * np.sqrt(((v - v.mean()) ** 2).sum() / len(v)), rel=1e-12)
    assert row["std"] == pytest.approx(100 * np.std(v), rel=1e-12)
    assert row["ddof"] == 0
    half = 2.7764451051977987 * v.std(ddof=1) / np.sqrt(5)  # t(0.975, df=4)
    assert (row["ci95_low"], row["ci95_high"]) == pytest.approx((100 * (v.mean() - half), 100 * (v.mean() + half)))
    assert "mean ± population std (ddof=0)" in s.markdown().splitlines()[0]
    one = summarise(known_runs(), baseline="imagenet", ddof=1).table.set_index(["init", "dataset"])
    assert one.loc[("chexpert", "nih"), "std"] == pytest.approx(100 * np.std(v, ddof=1), rel=1e-12)
    assert "mean ± sample std (ddof=1)" in summarise(known_runs(), ddof=1).caption()
    with pytest.raises(BenchxferError, match="ddof=2; allowed: 1, 0"):
        summarise(known_runs(), ddof=2)


def test_scale_and_best_come_from_each_metrics_registry_entry(monkeypatch):
    """Every registered metric is printed as its entry says (x100 or as is, named in the figures' labels); and a
    metric whose entry says lower is better (registered here for this test only) is printed as is, its best the
    lowest mean."""
    from benchxfer.report.figures import _metric_label
    from benchxfer.train.metrics import METRICS, Metric

    for name, m in METRICS.items():
        runs = known_runs().assign(metric=name)
        t = summarise(runs, baseline="imagenet").table.set_index(["init", "dataset"])
        v = np.array(VALUES[("imagenet", "nih")])
        assert t.loc[("imagenet", "nih"), "mean"] == pytest.approx((100 if m.percent else 1) * v.mean()), name
        assert _metric_label(name).endswith(" (x100)") == m.percent
        pick = max if m.higher_is_better else min
        want = {pick((k for k in VALUES if k[1] == ds), key=lambda k: np.mean(VALUES[k])) for ds in ("nih", "drive")}
        assert set(t.loc[t["best"]].index) == want, name
    monkeypatch.setitem(METRICS._items, "error_rate", Metric("error_rate", lambda r: 0.0, False, False))
    t = summarise(known_runs().assign(metric="error_rate"), baseline="imagenet").table.set_index(["init", "dataset"])
    assert t.loc[("imagenet", "nih"), "mean"] == pytest.approx(np.mean(VALUES[("imagenet", "nih")]))
    assert set(t.loc[t["best"]].index) == {("scratch", "nih"), ("chexpert", "drive")}
    assert not _metric_label("error_rate").endswith("(x100)")


@pytest.mark.parametrize("n", [2, 3, 5, 30, 1024])
def test_ci95_quantile_is_scipy_stats_t_ppf_exactly(n):
    """ci95 takes Student's quantile from scipy.special (scipy.stats is imported only for a test): the same bits."""
    from scipy import stats

    v = np.linspace(0.5, 0.9, n) ** 2
    half = stats.t.ppf(0.975, n - 1) * v.std(ddof=1) / np.sqrt(n)
    assert ci95(v) == (float(v.mean() - half), float(v.mean() + half))
