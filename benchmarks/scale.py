"""The sweep's driver at the shipped sweeps' sizes and beyond: sweeps of 16, 256 and 1,024 tiny trials.

Each size is one ``benchxfer sweep`` of tiny trials (ResNet-18 at 32 px, one epoch of 16 synthetic ChestX-ray14
images, ``keep: none``) on a local Ray session with two slots (one CPU per trial) and the embedded MLflow server, run
in this process as the command runs it (``runner.execute``), each size in a fresh home. Recorded per size:

- orchestration per trial: the slot-seconds of the trials' window (the first ``train_run``'s start, its result's
  time less its ``wall_seconds``, to the last result) not spent inside ``train_run`` (``result.json``'s
  ``wall_seconds``), per trial: everything a trial costs but its training -- Tune, the driver, MLflow, the console,
  the trial's files. The sweep's own start (Ray, the server, the plan) and end (the report) are outside the window
  and listed apart. (The window once began at the first epoch's start, after the first trials' ``set_up``, which
  ``wall_seconds`` counts: at 16 trials that made the figure negative.) The last trials leave a slot idle while the
  other finishes: up to a trial's time spread over ``n``, which weighs at 16 trials and not at 1,024, so the ratio
  is read against a reference of 256 or more;
- the driver's peak memory (this process's maximum resident set; the trials run in Ray's worker processes);
- the home's size once the sweep is done (trial folders, MLflow store, Tune's experiment folder);
- ``benchxfer status NAME`` and ``benchxfer report NAME``, each timed as a command of its own on the finished home.

Goals (issue 31): orchestration per trial at 1,024 trials within 1.2x of that at 16 (read against 256, see above);
the driver under 2 GB; ``status`` and ``report`` under 3 s.

    .venv/bin/python benchmarks/scale.py                     # 16, 256, 1024 (about 17 min on 2 cores)
    .venv/bin/python benchmarks/scale.py --sizes 16 256 --no-record
"""

from __future__ import annotations

import argparse
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

SWEEP = """
name: scale{n}
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
    synthetic: {{n_train: 16, n_val: 8, n_test: 8, size: 32, seed: 1}}
lr: [0.001]
seeds: {n}
keep: none
overrides: {{arch: resnet18, size: 32, batch_size: 16, epochs: 1, loader_workers: 0}}
resources: {{workers: 1, cpus_per_worker: 1, max_concurrent: {slots}, trainer: direct}}
failure: {{max_retries: 0}}
"""
GOAL_RATIO, GOAL_DRIVER_GB, GOAL_COMMAND_S = 1.2, 2.0, 3.0


def du(path: Path) -> int:
    return sum(p.stat().st_size for p in path.rglob("*") if p.is_file() and not p.is_symlink())


def timed(argv: list[str], env: dict[str, str]) -> float:
    """``benchxfer ARGV`` timed as a command of its own, in the home (``report`` writes ``reports/`` there)."""
    t0 = time.perf_counter()
    proc = subprocess.run([sys.executable, "-m", "benchxfer.cli", *argv], env=env, capture_output=True, text=True,
                          cwd=env["BENCHXFER_HOME"])
    took = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"benchxfer {' '.join(argv)} failed:\n{proc.stdout[-2000:]}\n{proc.stderr[-2000:]}")
    return took


def one_size(n: int, slots: int) -> dict:
    """One sweep of ``n`` trials in a fresh home, in a process of its own (a fresh driver: its peak memory and its
    Ray session are this size's alone). Returns the figures."""
    home = Path(tempfile.mkdtemp(prefix=f"benchxfer-scale{n}-"))
    try:
        env = {**os.environ, "BENCHXFER_HOME": str(home), "PYTHONUNBUFFERED": "1"}
        env.pop("MLFLOW_TRACKING_URI", None)
        (home / "s.yaml").write_text(SWEEP.format(n=n, slots=slots))
        proc = subprocess.run([sys.executable, __file__, "--driver", str(home / "s.yaml")], env=env,
                              capture_output=True, text=True)
        if proc.returncode != 0:
            raise SystemExit(f"the sweep of {n} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
        out = json.loads(proc.stdout.strip().splitlines()[-1])
        trials = sorted((home / "runs" / f"scale{n}" / "trials").iterdir())
        results = [json.loads((t / "result.json").read_text()) for t in trials]
        ends = [(t / "result.json").stat().st_mtime for t in trials]
        window = max(ends) - min(end - r["wall_seconds"] for end, r in zip(ends, results))
        train = sum(r["wall_seconds"] for r in results)
        out.update(n=len(results), window=window, train_per_trial=train / n,
                   orchestration=(slots * window - train) / n, home_bytes=du(home),
                   status_s=timed(["status", f"scale{n}"], env), report_s=timed(["report", f"scale{n}"], env),
                   outside=out["sweep_s"] - window)
        return out
    finally:
        shutil.rmtree(home, ignore_errors=True)


def driver(spec: str) -> None:
    """The sweep itself, as ``benchxfer sweep`` runs it, with the console's plain output discarded."""
    from benchxfer.commands import _run
    from benchxfer.plan.planning import make_plan

    plan = make_plan(spec, write_synthetic=True)
    t0 = time.perf_counter()
    import click

    click.echo = lambda *a, **k: None  # the console's lines: not this benchmark's output
    _run(plan, None, None)
    took = time.perf_counter() - t0
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * 1024  # KB on Linux
    print(json.dumps({"sweep_s": took, "driver_peak_bytes": peak}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sizes", type=int, nargs="+", default=[16, 256, 1024])
    parser.add_argument("--slots", type=int, default=2)
    parser.add_argument("--driver", help=argparse.SUPPRESS)
    parser.add_argument("--no-record", action="store_true")
    parser.add_argument("--note", default="", help="a line for BENCHMARKS.md (e.g. what else ran on the machine)")
    args = parser.parse_args()
    if args.driver:
        return driver(args.driver)
    load0 = os.getloadavg()[0]
    rows = []
    for n in args.sizes:
        r = one_size(n, args.slots)
        rows.append(r)
        print(f"{n} trials: orchestration {r['orchestration']:.2f} s/trial, train_run {r['train_per_trial']:.2f} "
              f"s/trial, driver {r['driver_peak_bytes'] / 1e9:.2f} GB, home {r['home_bytes'] / 1e6:.0f} MB, "
              f"status {r['status_s']:.1f} s, report {r['report_s']:.1f} s", flush=True)
    base = rows[0]["orchestration"]
    lines = ["| trials | orchestration s/trial (vs the first) | train_run s/trial | sweep wall s (outside the window) | "
             "driver peak GB | home MB | status s | report s |", "|---|---|---|---|---|---|---|---|"]
    for r in rows:
        lines.append(f"| {r['n']} | {r['orchestration']:.2f} ({r['orchestration'] / base:.2f}x) | "
                     f"{r['train_per_trial']:.2f} | {r['sweep_s']:.0f} ({r['outside']:.0f}) | "
                     f"{r['driver_peak_bytes'] / 1e9:.2f} | {r['home_bytes'] / 1e6:.0f} | {r['status_s']:.1f} | "
                     f"{r['report_s']:.1f} |")
    last = rows[-1]
    verdict = (f"Goals: orchestration at {last['n']} trials {last['orchestration'] / base:.2f}x that at "
               f"{rows[0]['n']} (goal <= {GOAL_RATIO}x); driver peak {max(r['driver_peak_bytes'] for r in rows) / 1e9:.2f}"
               f" GB (goal < {GOAL_DRIVER_GB}); status {max(r['status_s'] for r in rows):.1f} s and report "
               f"{max(r['report_s'] for r in rows):.1f} s at most (goal < {GOAL_COMMAND_S} s).")
    body = "\n".join([f"{args.slots} slots, `keep: none`, commit {git_commit()}, load average {load0:.1f} at the "
                      "start." + (f" {args.note}" if args.note else ""), "", *lines, "", verdict])
    print(body)
    if not args.no_record:
        record("scale", "The driver at scale: sweeps of 16 to 1,024 tiny trials (issue 31)",
               f"python benchmarks/scale.py --sizes {' '.join(map(str, args.sizes))}", body)


if __name__ == "__main__":
    main()
