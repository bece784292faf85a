"""The lr search of tune-then-repeat, full vs successive halving (ASHA), side by side from the same seeds.

Nine (init, dataset) cells over both tasks are searched twice with the same Optuna seed, so that both arms try
the same 8 lrs per cell: once with every trial trained to the end (``scheduler: none``), once halved by a
per-cell ASHA (``scheduler: asha``, min 1 epoch, eta 3). The cells: 3 inits x 3 synthetic sets in the real
layouts (ChestX-ray14: 14-label classification; Montgomery: binary TB classification; Montgomery lungs: U-Net
segmentation), ResNet-18 at 32 px, where lrs from 1e-4 to 1 really differ. The inits are ``scratch`` and two
backbones that the benchmark pre-trains first (``benchxfer pretrain``'s code, 3 epochs of supervised multi-label
pre-training at 32 px) on two separate synthetic chest sources: ChestX-ray14-layout and CheXpert-layout images.
Reported per arm: epochs trained (counted from each trial's ``epochs.jsonl``), wall time, the lr picked per cell
and the test score of the picked trial.

Compute of the whole study = stage 1 as measured + stage 2, which is the same for both arms: (seeds - 1) more
trials per cell at the picked lr, counted as ``epochs`` each (not run here; the winner is stage 2's seed 0).

    flock /tmp/benchxfer-ray.lock .venv/bin/python benchmarks/search.py            # records into BENCHMARKS.md
    flock /tmp/benchxfer-ray.lock .venv/bin/python benchmarks/search.py --no-record
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import sys
import tempfile
import textwrap
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record

DATASETS = ("chestxray14", "montgomery", "montgomery-lungs")
INITS = {"scratch": None, "bench-cxr14": "chestxray14", "bench-chexpert": "chexpert"}  # init -> its source set
SWEEP = """
name: {name}
mode: tune-then-repeat
inits:
{inits}
datasets:
{datasets}
lr: {{search: loguniform, low: 1.0e-4, high: 1.0, trials: {trials}}}
seeds: {seeds}
overrides: {{arch: resnet18, size: 32, batch_size: 16, epochs: {epochs}, patience: 100, loader_workers: 0,
            augment: plain}}
resources: {{workers: 1, cpus_per_worker: 1}}
failure: {{max_retries: 0}}
"""
PRETRAIN = """
name: {name}
sources:
  - {{dataset: {source}, root: synthetic, synthetic: {{n_train: 256, n_val: 32, n_test: 8, size: 32, seed: 7,
      family: cxr-source}}}}
arch: resnet18
start: scratch
recipe: supervised-pretrain
lr: 0.001
overrides: {{size: 32, batch_size: 32, epochs: 3, optimizer: adam, schedule: warmup-cosine, agc: 0.0,
            normalization: imagenet, weight_decay: 0, augment: plain, warmup_epochs: 1, base_batch: 0,
            loader_workers: 0}}
resources: {{workers: 1, cpus_per_worker: 2}}
"""
GOAL_SAVED, GOAL_AGREE, POINTS = 0.45, 0.90, 0.5


def write(folder: Path, name: str, trials: int, epochs: int, seeds: int, n_train: int) -> Path:
    inits = []
    for init, source in INITS.items():
        if source is None:
            inits.append(f"  - {init}")
            continue
        pfile = folder / f"{init}.yaml"
        pfile.write_text(textwrap.dedent(PRETRAIN.format(name=init, source=source)))
        inits.append(f"  - {{name: {init}, pretrain: {pfile}}}")
    ds = "\n".join(f"  - {{name: {d}, root: synthetic, synthetic: {{n_train: {n_train}, n_val: 32, n_test: 48, "
                   f"size: 32, seed: 3}}}}" for d in DATASETS)
    path = folder / f"{name}.yaml"
    path.write_text(textwrap.dedent(SWEEP.format(name=name, inits="\n".join(inits), datasets=ds, trials=trials,
                                                 seeds=seeds, epochs=epochs)))
    return path


def arm(folder: Path, name: str, scheduler: str, args, uri: str) -> dict:
    from benchxfer import paths
    from benchxfer.launch.pretrain import run_pretrain
    from benchxfer.launch.runner import launch_of
    from benchxfer.launch.search import parse_search_options, run_stage1
    from benchxfer.plan.planning import make_plan
    from benchxfer.tracking import SweepRecorder
    from benchxfer.trialdir import TrialDir

    plan = make_plan(str(write(folder, name, args.trials, args.epochs, args.seeds, args.n_train)), write_synthetic=True)
    for pspec in plan.to_pretrain:  # the first arm pre-trains the inits; the second finds them in the zoo
        run_pretrain(pspec, uri, echo=lambda _: None)
    opts = parse_search_options({"scheduler": scheduler} | ({"min_epochs": 1, "eta": 3} if scheduler != "none" else {}),
                                "lr")
    t0 = time.monotonic()
    best = run_stage1(plan, launch_of(plan, uri), SweepRecorder(uri, name), echo=lambda _: None, options=opts)
    wall = time.monotonic() - t0
    tdirs = list((paths.sweep_dir(name) / "trials").iterdir())
    epochs = sum(len(TrialDir(t).epochs_started()) for t in tdirs)
    stopped = sum(TrialDir(t).stopped() is not None for t in tdirs)
    scores = {}
    for c in plan.cells:
        key = c.trial(name, best[f"{c.init}|{c.dataset.name}"], plan.spec.seeds[0], None, plan.roots[c.dataset.name]).key
        scores[f"{c.init}|{c.dataset.name}"] = TrialDir.of(name, key).result().value
    for t in tdirs:  # what is measured is read; the epoch checkpoints (up to 2 x 150 MB a trial) are not kept
        shutil.rmtree(t / "checkpoints", ignore_errors=True)
    stage2 = (args.seeds - 1) * len(plan.cells) * args.epochs
    return {"best": best, "scores": scores, "wall": wall,
            "epochs": epochs, "stopped": stopped, "trials": len(tdirs), "study": epochs + stage2}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="lrs tried per cell (default 8)")
    parser.add_argument("--epochs", type=int, default=9, help="epochs per full trial (default 9)")
    parser.add_argument("--seeds", type=int, default=3, help="seeds of the study, for its stage-2 count (default 3)")
    parser.add_argument("--n-train", type=int, default=64, help="training images per cell (default 64)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    os.environ["BENCHXFER_HOME"] = tmp.name  # before Ray starts, so that its workers see it
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    from benchxfer.launch.sweep import ensure_ray
    from benchxfer.tracking import LocalServer

    server = LocalServer(home=Path(tmp.name))
    uri = server.start()
    ensure_ray()
    try:
        full = arm(Path(tmp.name), "full", "none", args, uri)
        half = arm(Path(tmp.name), "asha", "asha", args, uri)
    finally:
        import ray

        ray.shutdown()
        server.stop()

    rows = ["| cell | lr full | lr asha | test full | test asha | agree |", "|---|---|---|---|---|---|"]
    agree = 0
    cells = list(full["scores"])
    for d in cells:
        a, b = full["scores"][d], half["scores"][d]
        ok = full["best"][d] == half["best"][d] or abs(a - b) * 100 <= POINTS or b > a
        agree += ok
        rows.append(f"| {d.replace('|', ' / ')} | {full['best'][d]:.3g} | {half['best'][d]:.3g} | {a:.4f} | {b:.4f} | "
                    f"{'yes' if ok else 'no'} |")
    saved = 1 - half["study"] / full["study"]
    frac = agree / len(cells)
    met = saved >= GOAL_SAVED and frac >= GOAL_AGREE
    body = "\n".join([
        (f"{len(cells)} cells ({', '.join(INITS)} x {', '.join(DATASETS)}), {args.trials} lrs each from 1e-4 to 1, "
        f"{args.epochs} epochs per full trial, {args.n_train} training images at 32 px; ASHA min 1 epoch, eta 3; "
        f"same Optuna seed in both arms."), "",
        ("| arm | search trials | stopped early | epochs trained (stage 1) | stage-1 wall | study epochs "
        f"(stage 1 + {args.seeds - 1} more seeds) |"), "|---|---|---|---|---|---|",
        f"| full | {full['trials']} | {full['stopped']} | {full['epochs']} | {full['wall']:.0f} s | {full['study']} |",
        f"| asha | {half['trials']} | {half['stopped']} | {half['epochs']} | {half['wall']:.0f} s | {half['study']} |",
        "", *rows, "",
        (f"Compute saved on the whole study: {saved:.0%} (stage 1 alone: {1 - half['epochs'] / full['epochs']:.0%}, "
        f"wall {1 - half['wall'] / full['wall']:.0%}). Same lr, or a test score within {POINTS} points (or better), "
        f"in {agree}/{len(cells)} cells. Goal (>= {GOAL_SAVED:.0%} less, >= {GOAL_AGREE:.0%} of cells): "
        f"{'met' if met else 'not met'}."),
    ])
    print(json.dumps({"full": full, "asha": half}, indent=1, default=str))
    record("search", "lr search: full vs successive halving (ASHA)",
           " ".join(["python benchmarks/search.py", *sys.argv[1:]]), body, print_only=args.no_record)


if __name__ == "__main__":
    main()
