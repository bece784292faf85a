"""A report of 10,000 synthetic runs (result.json fallback, no MLflow) must take under 10 s.

Writes a few-shot sweep of 10 inits x 5 datasets x 5 shots (1, 5, 10, 100, full) x 40 seeds into a
temporary BENCHXFER_HOME in the exact trial-folder layout (2 % failed, 1 % unfinished), then times
``results.collect`` (reading the 10,000 files) and ``report.write_report`` (Parquet, CSV, summary,
t-tests, 10 PNG figures, HTML) separately. Run: ``.venv/bin/python benchmarks/report.py``.
"""

from __future__ import annotations

import json
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))

INITS = ["imagenet", "scratch", "chexpert", "nih", "bit-m", "bit-s", "cxr-bit", "moco", "simclr", "dino"]
DATASETS = ["chestxray14", "chexpert", "shenzhen", "montgomery", "covidx"]
SHOTS = [1, 5, 10, 100, None]
SEEDS = range(40)
LIMIT_S = 10.0


def write_sweep(sweep: str) -> int:
    """Write trials.json and one result.json per ended trial; return the number of trials."""
    from benchxfer import paths

    rng = np.random.default_rng(0)
    expected = []
    for i, init in enumerate(INITS):
        for dataset in DATASETS:
            for shot in SHOTS:
                for seed in SEEDS:
                    key = f"{init}-{dataset}-{shot or 'full'}-s{seed}"
                    trial = {"trial_key": key, "init": init, "dataset": dataset, "recipe": "bit-hyperrule",
                             "lr": 0.001, "seed": seed, "shot": shot}
                    expected.append(trial)
                    folder = paths.trial_dir(sweep, key)
                    folder.mkdir(parents=True)
                    u = rng.random()
                    if u < 0.01:
                        continue  # started, never ended: unfinished
                    failed = u < 0.03
                    value = None if failed else float(np.clip(0.7 + 0.01 * i + 0.02 * np.log1p(shot or 500)
                                                               + rng.normal(0, 0.02), 0, 1))
                    result = {**trial, "sweep": sweep, "task": "binary", "metric": "auroc", "value": value,
                              "test": {} if failed else {"auroc": value, "accuracy": value - 0.05},
                              "best_epoch": None if failed else 7, "epochs_run": 3 if failed else 10,
                              "status": "failed" if failed else "finished",
                              "error": "CUDA out of memory" if failed else None,
                              "wall_seconds": 60.0, "accelerator_hours": 0.017, "mlflow_run_id": None}
                    (folder / "result.json").write_text(json.dumps(result))
    (paths.sweep_dir(sweep) / "trials.json").write_text(json.dumps(expected))
    return len(expected)


def main() -> None:
    from _record import record

    with tempfile.TemporaryDirectory() as tmp:
        os.environ["BENCHXFER_HOME"] = tmp
        os.environ.pop("MLFLOW_TRACKING_URI", None)
        n = write_sweep("bench")
        load = os.getloadavg()[0]
        c0, t0 = time.process_time(), time.perf_counter()
        from benchxfer.report.results import collect
        from benchxfer.report.write import write_report
        t1 = time.perf_counter()
        runs = collect("bench")
        t2 = time.perf_counter()
        report = write_report(runs, Path(tmp) / "report", title="bench")
        t3 = time.perf_counter()
        cpu = time.process_time() - c0
    total = t3 - t0
    body = (
        f"| step | seconds |\n|---|---:|\n"
        f"| import benchxfer.report.write (pandas, scipy, matplotlib) | {t1 - t0:.2f} |\n"
        f"| read {n} trials (result.json files + trials.json) | {t2 - t1:.2f} |\n"
        f"| summary, t-tests, {len(report.figures)} PNG figures, Parquet/CSV, HTML | {t3 - t2:.2f} |\n"
        f"| **total** | **{total:.2f}** (limit {LIMIT_S:.0f}) |\n"
        f"| CPU time of the process | {cpu:.2f} |\n\n"
        f"Load average when it started: {load:.2f} (other work on the machine slows the wall times). "
        f"{len(runs.frame)} rows, {len(report.summary.columns)} columns x {len(report.summary.inits)} inits, "
        f"{int(report.summary.table['n'].sum())} finished averaged, {len(report.summary.not_averaged)} listed "
        f"as failed or unfinished."
    )
    record("report", "Report of 10,000 synthetic runs", "python benchmarks/report.py", body)
    if total >= LIMIT_S:
        raise SystemExit(f"too slow: {total:.2f} s >= {LIMIT_S} s")


if __name__ == "__main__":
    main()
