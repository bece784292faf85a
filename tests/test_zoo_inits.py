"""The normalisation each BiT init is fine-tuned with (the second study: ImageNet mean/std for the natural
models, 0.5/0.5 for the chest X-ray models)."""

import pytest

from benchxfer import zoo
from benchxfer.recipes import TrainConfig
from benchxfer.train.data_setup import normalisation

pytestmark = pytest.mark.fast

IMAGENET = ((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))
HALF = ((0.5, 0.5, 0.5), (0.5, 0.5, 0.5))
EXPECTED = {
    **{f"bit-{src}-{size}": IMAGENET for src in ("s", "m") for size in ("r50x1", "r152x4")},
    **{f"bit-{src}-{size}": HALF for src in ("chexpert", "chexpert-mimic", "chexpert-mimic-nih", "cxr")
       for size in ("r50x1", "r152x4")},
}


def test_every_bit_init_is_covered():
    assert sorted(c.name for c in zoo.list_inits() if c.name.startswith("bit-")) == sorted(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_bit_init_normalisation(name):
    cfg = zoo.get_init(name)
    assert (cfg.mean, cfg.std) == EXPECTED[name]
    # what a run with the recipe's normalization "init" feeds the transforms
    mean, std = normalisation(TrainConfig(init=name, normalization="init"))
    assert (tuple(mean), tuple(std)) == EXPECTED[name]
