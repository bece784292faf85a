"""A pre-training run's finish hook: the trained backbone into the zoo. It runs on rank 0 at the end of
:func:`benchxfer.train.loop.train_run` (``Runtime.finish``); ``launch.pretrain.run_pretrain`` hands it over."""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass

from benchxfer import zoo
from benchxfer.recipes import TrainConfig
from benchxfer.trialdir import TrialResult


@dataclass(frozen=True)
class ExportBackbone:
    """The finish hook of a pre-training run (rank 0, after the test): the backbone, without its head, saved
    into the zoo under the new init's name; the result records where it went. A name the zoo holds for something
    else (an import, another pre-training) is replaced only with ``force``."""

    name: str
    zoo: str | None = None
    force: bool = False

    def __call__(self, model, cfg: TrainConfig, result: TrialResult) -> TrialResult:
        from benchxfer.train.data_setup import normalisation
        from benchxfer.zoo.backbone import HEAD_PREFIXES

        backbone = {k: v.detach().cpu() for k, v in model.state_dict().items() if not k.startswith(HEAD_PREFIXES)}
        provenance = {"sources": cfg.sources, "epochs": result.epochs_run, "start": cfg.init, "recipe": cfg.recipe,
                      "mlflow_run_id": result.mlflow_run_id, "trial_key": cfg.trial_key}
        mean, std = normalisation(cfg)
        path = zoo.save_local_init(self.name, backbone, cfg.arch, provenance, zoo=self.zoo,
                                   mean=tuple(mean), std=tuple(std), force=self.force)
        return dataclasses.replace(result, zoo_path=str(path))
