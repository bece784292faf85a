"""``benchxfer report NAME`` on a finished home whose runs are in the embedded MLflow store (issue 31's goal: < 3 s).

Each size is a fresh home of N finished tiny trials written by benchxfer's own writers, without Ray: the home's local
MLflow server (``tracking.LocalServer``), the sweep's experiment and parent run (``tracking.SweepRecorder``), each
trial's run, epochs, test metrics, ``learning_curves.csv`` and tags through ``tracking.TrialRun`` as the driver and
the training loop write them, its ``result.json`` and the sweep's ``trials.json``; the server is stopped before timing, as after a
sweep. Then ``benchxfer report NAME`` (publishing included, as it runs by default) is timed as a command of its own,
``--repeat`` times; with ``--before SRC`` (a folder holding another ``benchxfer`` package, e.g. ``git archive REV
benchxfer | tar -x -C SRC``) that tree's report is timed too, alternating with this one on the same home, and the
two report folders are compared file by file.

    .venv/bin/python benchmarks/report_store.py --sizes 16 160 --before /tmp/old --no-record
"""

from __future__ import annotations

import argparse
import filecmp
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import git_commit, record  # noqa: E402

ROOT = Path(__file__).resolve().parent.parent


def build(n: int, home: Path) -> str:
    """A finished sweep ``store<n>`` of ``n`` trials in ``home`` (see the module docstring)."""
    os.environ["BENCHXFER_HOME"] = str(home)
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from benchxfer.tracking import LocalServer, SweepRecorder, TrialRun
    from benchxfer.train.loop import _curves_csv

    sweep = f"store{n}"
    server = LocalServer(home)
    uri = server.start()
    try:
        rec = SweepRecorder(uri, sweep)
        expected = []
        for s in range(n):
            init = ("imagenet", "scratch")[s % 2]
            key = f"{init}_chestxray14_0.001_{s}_{s:08x}"
            params = {"init": init, "dataset": "chestxray14", "recipe": "systematic-cls", "lr": "0.001",
                      "seed": str(s), "shot": "full"}
            log = TrialRun.open(rec, key, params, task="multilabel", metric="auroc")
            run_id = log.run_id
            history = []
            for e in range(3):
                row = {"epoch": e, "train_loss": 1 / (e + 1) + s / 1000, "val_loss": 1.2 / (e + 1), "lr": 0.001,
                       "val_auroc": 0.5 + 0.1 * e + (s % 5) / 100}
                history.append(row)
                log.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=e)
            value = 0.6 + (s % 7) / 100 + (0.05 if init == "imagenet" else 0.0)
            log.log_metrics({"test_auroc": value, "best_epoch": 2, "epochs_run": 3, "wall_seconds": 1.5,
                             "accelerator_hours": 0.0}, step=2)
            log.attach(_curves_csv(history), "learning_curves.csv")
            log.mark_finished({})
            log.close("FINISHED")
            folder = home / "runs" / sweep / "trials" / key
            folder.mkdir(parents=True)
            result = {"sweep": sweep, "trial_key": key, "recipe": "systematic-cls", "init": init,
                      "dataset": "chestxray14", "task": "multilabel", "shot": None, "lr": 0.001, "seed": s,
                      "metric": "auroc", "value": value, "test": {"auroc": value}, "best_epoch": 2, "epochs_run": 3,
                      "status": "finished", "error": None, "wall_seconds": 1.5, "accelerator_hours": 0.0,
                      "mlflow_run_id": run_id}
            (folder / "result.json").write_text(json.dumps(result))
            expected.append({k: result[k] for k in ("trial_key", "init", "dataset", "recipe", "lr", "seed", "shot")})
        (home / "runs" / sweep / "trials.json").write_text(json.dumps(expected))
        rec.finish()
    finally:
        server.stop()
    return sweep


def timed(src: Path, sweep: str, home: Path, out: Path) -> tuple[float, float]:
    """The report's wall seconds and CPU seconds (its own and its children's: a server it starts counts)."""
    env = {**os.environ, "BENCHXFER_HOME": str(home), "PYTHONPATH": str(src)}
    env.pop("MLFLOW_TRACKING_URI", None)
    shutil.rmtree(out, ignore_errors=True)
    cpu0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchxfer.cli", "report", sweep, "--out", str(out)], env=env,
                          capture_output=True, text=True, cwd=home)
    took = time.perf_counter() - t0
    cpu1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = cpu1.ru_utime + cpu1.ru_stime - cpu0.ru_utime - cpu0.ru_stime
    if proc.returncode != 0:
        raise SystemExit(f"report {sweep} ({src}) failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took, cpu


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 160])
    parser.add_argument("--repeat", type=int, default=2)
    parser.add_argument("--before", type=Path, default=None, help="a folder holding another benchxfer package")
    parser.add_argument("--build", nargs=2, help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--note", default="", help="a line for BENCHMARKS.md (e.g. what else ran on the machine)")
    args = parser.parse_args()
    if args.build:
        print(build(int(args.build[0]), Path(args.build[1])))
        return
    trees = ([("before", args.before.resolve())] if args.before else []) + [("this tree", ROOT)]
    lines = ["| trials | " + " | ".join(f"report wall s (CPU s), {name}" for name, _ in trees)
             + " | load average | same files |",
             "|---|" + "---|" * len(trees) + "---|---|"]
    for n in args.sizes:
        home = Path(tempfile.mkdtemp(prefix=f"benchxfer-store{n}-"))
        try:
            proc = subprocess.run([sys.executable, __file__, "--build", str(n), str(home)], capture_output=True,
                                  text=True, env={**os.environ, "PYTHONPATH": str(ROOT)})
            if proc.returncode != 0:
                raise SystemExit(f"building {n} trials failed:\n{proc.stderr[-3000:]}")
            sweep = proc.stdout.strip().splitlines()[-1]
            times: dict[str, list[tuple[float, float]]] = {name: [] for name, _ in trees}
            loads = []
            for _ in range(args.repeat):
                for name, src in trees:
                    loads.append(os.getloadavg()[0])
                    times[name].append(timed(src, sweep, home, home / "reports" / name))
            same = "-"
            if len(trees) == 2:
                a, b = (home / "reports" / name for name, _ in trees)
                names = sorted(p.name for p in a.iterdir() if not p.name.startswith("."))
                same = "yes" if names == sorted(p.name for p in b.iterdir() if not p.name.startswith(".")) and all(
                    filecmp.cmp(a / f, b / f, shallow=False) for f in names) else "NO"
            lines.append(f"| {n} | " + " | ".join(" / ".join(f"{t:.1f} ({c:.1f})" for t, c in times[name]) for name, _ in trees)
                         + f" | {min(loads):.1f}-{max(loads):.1f} | {same} |")
            print(lines[-1], flush=True)
        finally:
            shutil.rmtree(home, ignore_errors=True)
    body = "\n".join([f"commit {git_commit()}, {args.repeat} runs each (alternating)." +
                      (f" {args.note}" if args.note else ""), "", *lines])
    print(body)
    if not args.no_record:
        record("report-store", "`benchxfer report` on the embedded MLflow store (issue 31)",
               "python benchmarks/report_store.py --sizes " + " ".join(map(str, args.sizes))
               + (" --before SRC" if args.before else ""), body)


if __name__ == "__main__":
    main()
