"""The benchmarks' sweep: short trials of ResNet-18 at 32 px on a synthetic ChestX-ray14-layout set, one at a
time, one CPU each, no retries."""

from __future__ import annotations

import textwrap
from pathlib import Path

SWEEP = """
name: {name}
inits: [scratch]
datasets:
  - name: chestxray14
    root: synthetic
    synthetic: {{n_train: {n_train}, n_val: 32, n_test: 32, size: 32, seed: 1}}
lr: [0.001]
seeds: {trials}
overrides: {{arch: resnet18, size: 32, batch_size: 16, epochs: {epochs}, patience: 100, loader_workers: 0,
            checkpoint_every_s: {checkpoint_every_s}}}
resources: {{workers: 1, cpus_per_worker: 1, max_concurrent: 1, trainer: {trainer}}}
failure: {{max_retries: 0}}
"""


def write_sweep(folder: str | Path, name: str, *, trials: int, epochs: int, n_train: int,
                trainer: str = "auto", checkpoint_every_s: float = 300.0) -> Path:
    """``checkpoint_every_s``: the default (300 s), or 0 for a checkpoint every epoch."""
    path = Path(folder) / f"{name}.yaml"
    path.write_text(textwrap.dedent(SWEEP.format(name=name, trials=trials, epochs=epochs, n_train=n_train,
                                                 trainer=trainer, checkpoint_every_s=checkpoint_every_s)))
    return path
