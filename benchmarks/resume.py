"""Work redone after the sweep's driver is killed: epochs executed / epochs needed.

A sweep of short trials (ResNet-18 at 32 px, synthetic ChestX-ray14 layout, one trial at a time) is started
as its own process (``benchxfer sweep``) and killed with SIGKILL at random moments; after each kill
``benchxfer resume`` is started again, until a resume runs to the end. The trials save a checkpoint every
epoch (``checkpoint_every_s: 0``; by default a run saves every 300 s and at its end, and these trials are
shorter than that). Every epoch a trial starts is
logged in its folder (``epochs.jsonl``), so the count of epochs executed includes those cut short.

    .venv/bin/python benchmarks/resume.py               # 4 trials x 4 epochs, 3 kills; records into BENCHMARKS.md
    .venv/bin/python benchmarks/resume.py --kills 5 --seed 1 --no-record
"""

from __future__ import annotations

import argparse
import os
import random
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402
from _sweep import write_sweep  # noqa: E402


def epoch_starts(trials: Path) -> dict[str, list[int]]:
    from benchxfer.trialdir import TrialDir

    return {t.name: TrialDir(t).epochs_started() for t in sorted(trials.glob("*"))}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=4, help="trials in the sweep (default 4)")
    parser.add_argument("--epochs", type=int, default=4, help="epochs per trial (default 4)")
    parser.add_argument("--n-train", type=int, default=256, help="training images (default 256)")
    parser.add_argument("--kills", type=int, default=3, help="driver kills before the last resume (default 3)")
    parser.add_argument("--seed", type=int, default=None, help="seed of the kill moments (default: random)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args()
    seed = args.seed if args.seed is not None else random.SystemRandom().randrange(10_000)
    rng = random.Random(seed)

    tmp = tempfile.TemporaryDirectory()
    os.environ["BENCHXFER_HOME"] = tmp.name
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import ray

    from benchxfer import paths
    from benchxfer.launch.sweep import ensure_ray
    from benchxfer.tracking import LocalServer

    ensure_ray()  # one local Ray session that every driver joins, as on a cluster
    address = ray.get_runtime_context().gcs_address
    server = LocalServer()
    uri = server.start()
    path = write_sweep(tmp.name, "resume-bench", trials=args.trials, epochs=args.epochs, n_train=args.n_train,
                       checkpoint_every_s=0.0)
    trials_dir = paths.sweep_dir("resume-bench") / "trials"
    cli = [sys.executable, "-m", "benchxfer.cli"]
    needed = args.trials * args.epochs
    kills = []
    try:
        command = ["sweep", str(path)]
        for _ in range(args.kills):
            started_before = sum(map(len, epoch_starts(trials_dir).values()))
            if started_before >= needed:
                break
            # kill once a random number of further epochs has started (at a random moment inside it)
            target = min(needed - 1, started_before + rng.randint(1, max(1, args.epochs)))
            delay = rng.uniform(0.0, 1.5)
            proc = subprocess.Popen([*cli, *command, "--tracking-uri", uri, "--address", address],
                                    stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL, start_new_session=True)
            while sum(map(len, epoch_starts(trials_dir).values())) < target and proc.poll() is None:
                time.sleep(0.1)
            time.sleep(delay)
            if proc.poll() is None:
                os.killpg(proc.pid, signal.SIGKILL)
                proc.wait()
                kills.append(sum(map(len, epoch_starts(trials_dir).values())))
                time.sleep(3)  # Ray ends the dead driver's trial actors
            command = ["resume", "resume-bench"]
        t0 = time.perf_counter()
        done = subprocess.run([*cli, "resume", "resume-bench", "--tracking-uri", uri, "--address", address],
                              capture_output=True, text=True)
        t_last = time.perf_counter() - t0
        if done.returncode != 0 or f"{args.trials} of {args.trials} trials finished" not in done.stdout:
            raise SystemExit(f"the last resume did not finish the sweep:\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
        starts = epoch_starts(trials_dir)
    finally:
        server.stop()
        ray.shutdown()
        tmp.cleanup()

    executed = sum(map(len, starts.values()))
    # an interruption shows as an epoch started again: redone = from there up to the epoch that was cut short
    cuts = {k: [v[i - 1] - v[i] + 1 for i in range(1, len(v)) if v[i] <= v[i - 1]] for k, v in starts.items()}
    redone = sum(map(sum, cuts.values()))
    worst = max((max(c) for c in cuts.values() if c), default=0)
    rows = "\n".join(f"| seed {k.split('_s')[-1].split('_')[0]} | {' '.join(map(str, v))} | {len(cuts[k])} | "
                     f"{sum(cuts[k])} |" for k, v in starts.items())
    body = f"""
{args.trials} trials x {args.epochs} epochs (ResNet-18 at 32 px, {args.n_train} synthetic ChestX-ray14 images), one
trial at a time; the driver was killed with SIGKILL {len(kills)} times (after {', '.join(map(str, kills))} epoch starts
in all; kill seed {seed}), each time followed by `benchxfer resume`; the last resume took {t_last:.0f} s.

| trial | epochs started, in order | interruptions | epochs redone |
|---|---|---:|---:|
{rows}

Epochs executed / needed: **{executed} / {needed} = {executed / needed:.2f}**. Redone: {redone} epoch(s) over
{sum(map(len, cuts.values()))} interruption(s); at most {worst} per interruption (the epoch that was cut short).
Goal (issue 9): at most one epoch redone per interrupted trial: {'met' if worst <= 1 else 'NOT met'}.
"""
    record("resume", "Work redone after driver kills", "python benchmarks/resume.py", body, print_only=args.no_record)


if __name__ == "__main__":
    main()
