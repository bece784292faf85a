"""The fixed cost per trial of running through benchxfer, beyond the training itself.

The same short trials (ResNet-18 at 32 px on a synthetic ChestX-ray14-layout set) are run, in one process:

- plain:   ``train_run`` called in a loop, in-process, no Ray and no MLflow (the training itself);
- direct:  ``benchxfer sweep`` machinery (runner.execute) with 1-worker trials run inside their Ray Tune
           trial (``resources.trainer: direct``, what ``auto`` picks for 1 worker), logging to MLflow;
- torch:   the same with every trial on a Ray Train TorchTrainer (``trainer: torch``), as DDP trials run;
- ddp:     2-worker DDP trials (TorchTrainer, gloo, one CPU per worker: both cores of a 2-core machine).

Trials run one at a time (``max_concurrent: 1``, one CPU each) so that the three are comparable. The
per-sweep start-up (a local Ray session, the embedded MLflow server) is timed on its own: it is paid once
per sweep, not per trial. Each sweep mode runs twice, with 1 trial and with N, so that what a sweep pays
once (its Tune experiment, the closing summary) is told apart from what each trial pays:

    fixed overhead per trial = (wall(N trials) - wall(1 trial)) / (N - 1) - plain wall per trial

For the DDP row, which has no plain counterpart, the fixed overhead is the seconds per added trial minus the
seconds the trial spent inside its training function (``train_run``, as rank 0 measured it).

    .venv/bin/python benchmarks/overhead.py              # 5 trials per mode; records into BENCHMARKS.md
    .venv/bin/python benchmarks/overhead.py --trials 8 --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402
from _sweep import write_sweep  # noqa: E402

GOAL_S = 5.0


def quiet(_msg: str) -> None:
    pass


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=5, help="trials per mode (default 5)")
    parser.add_argument("--epochs", type=int, default=2, help="epochs per trial (default 2)")
    parser.add_argument("--n-train", type=int, default=128, help="training images (default 128)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    os.environ["BENCHXFER_HOME"] = tmp.name  # before Ray starts, so that its workers see it
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    load0 = os.getloadavg()[0]

    import torch

    from benchxfer.launch.runner import execute
    from benchxfer.launch.sweep import ensure_ray
    from benchxfer.plan.planning import make_plan
    from benchxfer.tracking import LocalServer
    from benchxfer.train.loop import train_run
    from benchxfer.train.session import Runtime

    def sweep_file(name: str, trainer: str, trials: int) -> Path:
        workers = 2 if trainer == "ddp" else 1
        path = write_sweep(tmp.name, name, trials=trials, epochs=args.epochs, n_train=args.n_train,
                           trainer="torch" if trainer == "ddp" else trainer)
        path.write_text(path.read_text().replace("workers: 1,", f"workers: {workers},"))
        return path

    t0 = time.perf_counter()
    ensure_ray()
    t_ray = time.perf_counter() - t0
    t0 = time.perf_counter()
    server = LocalServer()
    uri = server.start()
    t_mlflow = time.perf_counter() - t0

    walls: dict[str, float] = {}
    train_s: dict[str, float] = {}
    try:
        # plain: the same trials' training, in this process (one torch thread, as a 1-CPU trial gets)
        plan = make_plan(sweep_file("plain", "direct", args.trials), write_synthetic=True)
        torch.set_num_threads(1)
        t0 = time.perf_counter()
        results = [train_run(t.config, Runtime(trial_dir=str(Path(tmp.name) / "plain" / t.key)))
                   for t in plan.trials]
        walls["plain"] = time.perf_counter() - t0
        train_s["plain"] = sum(r.wall_seconds for r in results)

        for mode in ("direct", "torch", "ddp"):
            for n in (1, args.trials):
                name = f"{mode}-{n}"
                plan = make_plan(sweep_file(name, mode, n), write_synthetic=True)
                t0 = time.perf_counter()
                results = execute(plan, uri, echo=quiet).results
                walls[name] = time.perf_counter() - t0
                assert len(results) == n, f"{name}: only {len(results)} of {n} trials finished"
                train_s[name] = sum(r["wall_seconds"] for r in results)
    finally:
        server.stop()
        import ray

        ray.shutdown()
        tmp.cleanup()

    n = args.trials
    plain = walls["plain"] / n
    rows = [f"| plain loop, in-process (the training itself) | - | {walls['plain']:.1f} | {plain:.2f} | "
            f"{train_s['plain'] / n:.2f} | - | - |"]
    over = {}
    for mode, label in (("direct", "`benchxfer sweep`, 1-worker trial inside its Tune trial (default)"),
                        ("torch", "`benchxfer sweep`, trial on a Ray Train TorchTrainer")):
        one, many = walls[f"{mode}-1"], walls[f"{mode}-{n}"]
        per = (many - one) / (n - 1)
        over[mode] = per - plain
        rows.append(f"| {label} | {one:.1f} | {many:.1f} | {per:.2f} | {train_s[f'{mode}-{n}'] / n:.2f} | "
                    f"{over[mode]:+.2f} | {one - per:.1f} |")
    one, many = walls["ddp-1"], walls[f"ddp-{n}"]
    per = (many - one) / (n - 1)
    over["ddp"] = per - train_s[f"ddp-{n}"] / n
    rows.append(f"| `benchxfer sweep`, 2-worker DDP trial on a Ray Train TorchTrainer (2 CPUs) | {one:.1f} | "
                f"{many:.1f} | {per:.2f} | {train_s[f'ddp-{n}'] / n:.2f} | {over['ddp']:+.2f} (vs train_run) | "
                f"{one - per:.1f} |")
    body = f"""
ResNet-18 at 32 px, {args.n_train} training images, {args.epochs} epochs, synthetic ChestX-ray14 layout; trials
one at a time (1 CPU each). Sweeps log every epoch to the embedded MLflow server.

| mode | wall s, 1 trial | wall s, {n} trials | s per added trial | of which train_run s | fixed overhead per trial s | once per sweep s |
|---|---:|---:|---:|---:|---:|---:|
{chr(10).join(rows)}

"s per added trial" = (wall of {n} trials - wall of 1) / {n - 1}; "fixed overhead per trial" = that minus the plain
loop's seconds per trial; "once per sweep" = the 1-trial sweep's wall minus one added trial (the Tune experiment,
MLflow parent run, closing summary). "of which train_run" is the time inside the training function (data
set-up, model, epochs, test) as the trial measured it. Also once per sweep command: local Ray session
{t_ray:.1f} s, embedded MLflow server {t_mlflow:.1f} s. Load average at start: {load0:.2f}.

The TorchTrainer rows run with Ray Train's controller polling its workers every
{os.environ.get("RAY_TRAIN_HEALTH_CHECK_INTERVAL_S", "?")} s (`RAY_TRAIN_HEALTH_CHECK_INTERVAL_S`, set by
`benchxfer.launch.cluster`; Ray's default is 2 s).

Goal (issues 9 and 14): at most {GOAL_S:.0f} s of fixed overhead per trial. In-Tune 1-worker trials:
{'met' if over['direct'] <= GOAL_S else 'NOT met'} ({over['direct']:+.1f} s); 1-worker TorchTrainer trials:
{'met' if over['torch'] <= GOAL_S else 'NOT met'} ({over['torch']:+.1f} s); 2-worker DDP trials:
{'met' if over['ddp'] <= GOAL_S else 'NOT met'} ({over['ddp']:+.1f} s).
"""
    record("overhead", "Fixed overhead per trial: benchxfer sweep vs a plain loop",
           "python benchmarks/overhead.py" + (f" --trials {n}" if n != 5 else ""), body, print_only=args.no_record)


if __name__ == "__main__":
    main()
