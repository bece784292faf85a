"""How full the lr search keeps a cluster: slot use during stage 1 of tune-then-repeat on a local 4-slot cluster.

A real multi-node Ray cluster on this machine (``ray.cluster_utils.Cluster``: a head with 0 CPUs and two worker
nodes of 2 CPUs each, every node its own raylet: 4 one-CPU trial slots) runs stage 1 (``search.run_stage1``) of a
tune-then-repeat sweep of 2 cells x 8 lr trials, ResNet-18 at 32 px on synthetic sets in the real layouts. All
cells' searches share one Tune experiment, so the 16 trials compete for the 4 slots.

Slot use = busy slot-seconds / available slot-seconds over stage 1, where

- busy: CPUs that Ray has handed to trials, sampled every 0.2 s (``ray.available_resources()``: 4 minus the free
  CPUs), integrated over time. A slot counts as busy from the moment a trial's actor holds it until Ray frees it,
  so a trial's start-up (process, imports, data) counts as busy: it is what the slot is spent on;
- available: 4 slots x the stage's wall time, from the first sample with a busy slot to the last one.

On a 2-core machine the 4 slots share 2 cores (trials run slower than on 4 cores); the slot accounting is Ray's
and does not depend on it.

    flock /tmp/benchxfer-ray.lock .venv/bin/python benchmarks/slots.py            # records into BENCHMARKS.md
    flock /tmp/benchxfer-ray.lock .venv/bin/python benchmarks/slots.py --no-record
"""

from __future__ import annotations

import argparse
import os
import sys
import tempfile
import textwrap
import threading
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _record import record  # noqa: E402

SLOTS, GOAL = 4, 0.85
SWEEP = """
name: slots
mode: tune-then-repeat
inits: [scratch]
datasets:
  - {{name: chestxray14, root: synthetic, synthetic: {{n_train: 64, n_val: 32, n_test: 32, size: 32, seed: 3}}}}
  - {{name: montgomery, root: synthetic, synthetic: {{n_train: 64, n_val: 32, n_test: 32, size: 32, seed: 3}}}}
lr: {{search: loguniform, low: 1.0e-4, high: 1.0e-1, trials: {trials}}}
seeds: 2
overrides: {{arch: resnet18, size: 32, batch_size: 16, epochs: {epochs}, patience: 100, loader_workers: 0,
            augment: plain}}
resources: {{workers: 1, cpus_per_worker: 1}}
failure: {{max_retries: 0}}
"""


class SlotSampler:
    """Integrates the CPUs in use (total minus available) over time, from a background thread."""

    def __init__(self, total: float, every: float = 0.2):
        self.total, self.every = total, every
        self.samples: list[tuple[float, float]] = []
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        import ray

        while not self._stop.is_set():
            busy = self.total - ray.available_resources().get("CPU", 0.0)
            self.samples.append((time.monotonic(), busy))
            self._stop.wait(self.every)

    def __enter__(self) -> SlotSampler:
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()

    def use(self) -> tuple[float, float, float]:
        """(busy slot-seconds, available slot-seconds, wall) between the first and last sample with a busy slot."""
        busy_at = [i for i, (_, b) in enumerate(self.samples) if b > 0]
        if not busy_at:
            return 0.0, 0.0, 0.0
        span = self.samples[busy_at[0]:busy_at[-1] + 1]
        busy = sum(b * (t1 - t0) for (t0, b), (t1, _) in zip(span, span[1:]))
        wall = span[-1][0] - span[0][0]
        return busy, self.total * wall, wall


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=8, help="lr trials per cell (default 8)")
    parser.add_argument("--epochs", type=int, default=3, help="epochs per trial (default 3)")
    parser.add_argument("--no-record", action="store_true", help="print only; do not write BENCHMARKS.md")
    args = parser.parse_args()

    tmp = tempfile.TemporaryDirectory()
    os.environ["BENCHXFER_HOME"] = tmp.name  # before Ray starts, so that its workers see it
    os.environ.pop("MLFLOW_TRACKING_URI", None)
    import ray
    from ray.cluster_utils import Cluster

    from benchxfer.launch.runner import launch_of
    from benchxfer.launch.search import run_stage1
    from benchxfer.launch.sweep import ensure_ray
    from benchxfer.plan.planning import make_plan
    from benchxfer.tracking import LocalServer, SweepRecorder

    path = Path(tmp.name) / "slots.yaml"
    path.write_text(textwrap.dedent(SWEEP.format(trials=args.trials, epochs=args.epochs)))
    plan = make_plan(str(path), write_synthetic=True)
    server = LocalServer(home=Path(tmp.name))
    uri = server.start()
    # a local session first, then the nodes: Ray turns token authentication on for this process when it starts a
    # local session, and the nodes started after it inherit that setting (as in tests/test_cluster_multinode.py)
    ensure_ray()
    ray.shutdown()
    for k in ("RAY_ADDRESS", "RAY_API_SERVER_ADDRESS"):
        os.environ.pop(k, None)
    cluster = Cluster(initialize_head=True, head_node_args={"num_cpus": 0, "dashboard_host": "127.0.0.1"})
    for _ in range(2):
        cluster.add_node(num_cpus=SLOTS // 2)
    cluster.wait_for_nodes()
    try:
        ensure_ray(cluster.address)
        t0 = time.monotonic()
        with SlotSampler(SLOTS) as sampler:
            run_stage1(plan, launch_of(plan, uri), SweepRecorder(uri, "slots"), echo=print)
        stage = time.monotonic() - t0
    finally:
        ray.shutdown()
        cluster.shutdown()
        server.stop()
    busy, available, wall = sampler.use()
    use = busy / available if available else 0.0
    peak = max(b for _, b in sampler.samples)
    n = args.trials * len(plan.cells)
    body = "\n".join([
        (f"Stage 1 of a tune-then-repeat sweep: {len(plan.cells)} cells x {args.trials} lr trials = {n} trials of "
         f"{args.epochs} epochs (ResNet-18, 32 px, 64 training images), one CPU each, on a local cluster_utils "
         f"cluster: a 0-CPU head and 2 worker nodes x {SLOTS // 2} CPUs = {SLOTS} slots (on 2 cores)."), "",
        "| stage-1 wall | busy slot-seconds | available slot-seconds | slot use | most slots busy at once |",
        "|---|---|---|---|---|",
        f"| {wall:.0f} s | {busy:.0f} | {available:.0f} | {use:.0%} | {peak:.0f} |", "",
        (f"Goal (>= {GOAL:.0%}): {'met' if use >= GOAL else 'not met'}. The whole call took {stage:.0f} s "
         "(Tune's start and the cells' best-lr bookkeeping outside the busy span). Ray counts a slot busy while a "
         "trial's actor holds it; 1-worker trials reuse their actor, so the seconds between two trials on one "
         "actor count as busy too."),
    ])
    record("slots", "lr search: slot use of stage 1 on a 4-slot cluster",
           " ".join(["python benchmarks/slots.py", *sys.argv[1:]]), body, print_only=args.no_record)


if __name__ == "__main__":
    main()
