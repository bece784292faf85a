"""The last partial batch of an epoch (issue 33, item 3), against the studies' loaders:

- the first study (Version1/engine.py) trains from ``DataLoader(dataset_train, batch_size, shuffle=True)``:
  ``drop_last`` False, so an epoch is ``ceil(n / batch)`` steps and sees every image once; Shenzhen's 463
  training images at batch 32 are 15 steps (14 of 32 and one of 15);
- the chest pre-training (the second study's dataloaders/builder.py) the same, over a ``DistributedSampler``
  (padded to a multiple of the workers), and its warm-up counts ``len(train_loader)`` steps an epoch;
- the second study's fine-tuning (``full_batches``) keeps 128 images a step over a set larger than a batch, and
  takes its 32 micro-batches of recycled passes from a smaller one.
"""

import pytest
import torch
from torch.utils.data import DataLoader, DistributedSampler, TensorDataset

from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.train.data_setup import steps_per_epoch, train_loader

pytestmark = pytest.mark.fast


def recipe_cfg(recipe: str, **knobs) -> TrainConfig:
    return TrainConfig(recipe=recipe, **{**get_recipe(recipe).resolve({}, "t"), "loader_workers": 0, **knobs})


def epoch_batches(n: int, cfg: TrainConfig, rank: int = 0, world: int = 1, epochs: int = 2) -> list[list[list[int]]]:
    ds = TensorDataset(torch.zeros(n, 1), torch.arange(n))
    stream = train_loader(ds, cfg, rank, world, False)
    stream.start(0, epochs)
    try:
        return [[batch[0].tolist() for batch in stream.epoch(e)] for e in range(epochs)]
    finally:
        stream.close()


@pytest.mark.parametrize("recipe", ["systematic-cls", "systematic-seg"])
def test_shenzhen_epoch_is_every_image_in_15_steps_as_the_studys_loader(recipe):
    n, cfg = 463, recipe_cfg(recipe)
    study = DataLoader(range(n), batch_size=cfg.batch_size, shuffle=True)  # engine.py: drop_last False
    want = [len(b) for b in study]
    assert len(study) == 15 and want == [32] * 14 + [15]
    assert steps_per_epoch(n, cfg, 1) == len(study)
    for epoch in epoch_batches(n, cfg):
        assert [len(b) for b in epoch] == want
        assert sorted(i for b in epoch for i in b) == list(range(n))  # each image once


@pytest.mark.parametrize("n, world", [(1000, 1), (1001, 4), (300, 3)])
def test_pretraining_steps_are_the_studys_len_train_loader(n, world):
    cfg = recipe_cfg("supervised-pretrain", batch_size=64 * world)
    samplers = [DistributedSampler(range(n), num_replicas=world, rank=r, shuffle=True) for r in range(world)]
    study = [DataLoader(range(n), batch_size=64, sampler=s) for s in samplers]  # builder.py: drop_last False
    assert steps_per_epoch(n, cfg, world) == len(study[0])
    got = [epoch_batches(n, cfg, r, world, epochs=1)[0] for r in range(world)]
    for r in range(world):
        assert [len(b) for b in got[r]] == [len(b) for b in study[r]]
    assert set(i for shard in got for b in shard for i in b) == set(range(n))


def test_few_shot_fine_tuning_still_takes_only_full_batches():
    cfg = recipe_cfg("bit-hyperrule", dataset="pets")
    assert cfg.full_batches
    assert steps_per_epoch(463, cfg, 1) == 463 // 128
    assert all(len(b) == 128 for b in epoch_batches(463, cfg, epochs=1)[0])
    # a set smaller than a batch: the study's 32 micro-batches of 4 from recycled passes, each pass of 50 ending
    # in a micro-batch of 2 (finetune.py: recycle(DataLoader(batch_size=4, shuffle=True)), batch_split 32)
    sizes = [len(b) for b in DataLoader(range(50), batch_size=4, shuffle=True)] * 3
    assert [len(b) for b in epoch_batches(50, cfg, epochs=1)[0]] == [sum(sizes[:32])] == [124]
