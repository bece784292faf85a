"""Schedules, stopping rules, losses and metrics against the numbers in RECIPES.md."""

import math

import numpy as np
import pytest
import torch

from benchxfer.errors import BenchxferError
from benchxfer.recipes import get_recipe, list_recipes
from benchxfer.recipes.config import check_knobs
from benchxfer.recipes.parts import LOSSES, STOPPING, loss_for, masked_bce, soft_dice
from benchxfer.recipes.schedules import (
    ScheduleInput,
    bit_boundaries,
    bit_lr_factor,
    bit_mixup,
    build_schedule,
    cosine_epoch_factor,
)
from benchxfer.train.metrics import dice_from_counts, mean_auroc

pytestmark = pytest.mark.fast


def test_four_recipes_are_registered():
    assert [r.name for r in list_recipes()] == ["bit-hyperrule", "supervised-pretrain", "systematic-cls",
                                                "systematic-seg"]
    assert get_recipe("systematic-cls").defaults["plateau_factor"] == 0.5
    assert get_recipe("systematic-cls").default_lr == 2e-4
    assert get_recipe("systematic-seg").defaults["patience"] == 20
    with pytest.raises(BenchxferError, match="unknown recipe 'nope'; known: bit-hyperrule"):
        get_recipe("nope")


def test_bit_boundaries_by_dataset_size():
    assert bit_boundaries(19_999) == [100, 200, 300, 400, 500]
    assert bit_boundaries(20_000) == [500, 3000, 6000, 9000, 10000]
    assert bit_boundaries(499_999) == [500, 3000, 6000, 9000, 10000]
    assert bit_boundaries(500_000) == [500, 6000, 12000, 18000, 20000]
    assert bit_mixup(19_999) == 0.0 and bit_mixup(20_000) == 0.1


def test_bit_lr_warmup_then_steps():
    b = [100, 200, 300, 400, 500]
    base = 0.003
    got = [base * bit_lr_factor(s, b) for s in (0, 50, 99, 100, 200, 201, 301, 401, 499)]
    want = [0.0, 0.0015, 0.00297, 0.003, 0.003, 0.0003, 0.00003, 0.000003, 0.000003]
    assert np.allclose(got, want, rtol=1e-9, atol=1e-15)


def test_bit_schedule_drives_torch_optimizer():
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.SGD([p], lr=0.003, momentum=0.9)
    s = build_schedule("bit-hyperrule", opt, ScheduleInput(1, 1, 1000, 0, 0.5, 5, 1e-4))
    lrs = []
    for _ in range(250):
        lrs.append(opt.param_groups[0]["lr"])
        opt.step()
        s.scheduler.step()
    assert lrs[0] == 0.0 and math.isclose(lrs[50], 0.0015) and math.isclose(lrs[150], 0.003)
    assert math.isclose(lrs[201], 0.0003)


def test_cosine_epoch_matches_first_study_formula():
    lr, epochs = 1e-3, 200
    for e in (0, 50, 100, 150, 199):
        assert math.isclose(lr * cosine_epoch_factor(e, epochs), lr / 2 * (math.cos(math.pi * e / epochs) + 1))
    assert cosine_epoch_factor(100, 200) == pytest.approx(0.5)


def _epochs_run(losses, patience):
    stop = STOPPING.get("early")(patience)
    for n, value in enumerate(losses, 1):
        stop.update(value)
        if stop.should_stop:
            return n
    return len(losses)


@pytest.mark.parametrize("patience", [10, 20])  # classification, segmentation
def test_early_stopping_runs_more_than_patience_epochs_without_improvement(patience):
    # the study's rule: stop once the epochs without improvement exceed ``patience``. Losses improve for
    # 3 epochs, then never again: 3 + (patience + 1) epochs run (14 for patience 10, 24 for 20).
    losses = [5.0, 4.0, 3.0] + [3.5] * 100
    assert _epochs_run(losses, patience) == 3 + patience + 1
    # an improvement at the patience-th bad epoch resets the count
    losses = [5.0] + [6.0] * patience + [4.0] + [6.0] * 100
    assert _epochs_run(losses, patience) == 1 + patience + 1 + patience + 1
    stop = STOPPING.get("early")(patience)
    for value in [1.0] + [2.0] * (patience + 1):
        stop.update(value)
    restored = STOPPING.get("early")(patience)
    restored.load_state_dict(stop.state_dict())
    assert restored.should_stop and restored.best == 1.0


def test_recipe_patience_defaults():
    assert get_recipe("systematic-cls").defaults["patience"] == 10
    assert get_recipe("systematic-seg").defaults["patience"] == 20


def test_dice_loss_is_one_soft_dice_over_the_flattened_batch():
    # one image with 2 of 4 pixels positive, one empty image; logits 0 -> p = 0.5 everywhere.
    target = torch.tensor([[[[1.0, 1.0], [0.0, 0.0]]], [[[0.0, 0.0], [0.0, 0.0]]]])
    logits = torch.zeros_like(target)
    # batch: 1 - (2 * (0.5 * 2) + 1) / (8 * 0.5 + 2 + 1) = 1 - 3/7
    got = soft_dice(logits, target)
    assert got.shape == (2,)
    assert got.mean().item() == pytest.approx(4 / 7)
    # the per-image variant: image 1: 1 - (2 + 1)/(2 + 2 + 1) = 0.4; image 2: 1 - 1/(2 + 0 + 1) = 2/3
    per = LOSSES.get("dice-per-image")(logits, target)
    assert per.tolist() == pytest.approx([0.4, 2 / 3])
    assert loss_for("auto", "segmentation") is soft_dice


def test_losses_per_sample():
    logits = torch.tensor([[10.0, -10.0], [0.0, 0.0]])
    target = torch.tensor([[1.0, 0.0], [1.0, 1.0]])
    mask = torch.tensor([[1.0, 1.0], [1.0, 0.0]])
    got = masked_bce(logits, target, mask)  # the batch's 3 known cells: ~0, ~0 and log 2 (test_protocol_rules.py)
    assert got.shape == (2,) and got.mean().item() == pytest.approx(math.log(2) / 3, abs=1e-4)
    assert loss_for("auto", "multiclass")(torch.tensor([[0.0, 0.0]]), torch.tensor([1]), None).item() == \
        pytest.approx(math.log(2))
    perfect = soft_dice(torch.full((1, 1, 4, 4), 20.0), torch.ones(1, 1, 4, 4))
    assert perfect.item() == pytest.approx(0.0, abs=1e-6)


def test_metrics_on_known_values():
    scores = np.array([[0.9, 0.1], [0.8, 0.7], [0.2, 0.6], [0.1, 0.2]])
    targets = np.array([[1, 0], [1, 1], [0, 1], [0, 0]])
    assert mean_auroc(scores, targets) == pytest.approx(1.0)
    assert mean_auroc(scores, targets, columns=[1]) == pytest.approx(1.0)
    assert mean_auroc(np.array([0.1, 0.4, 0.35, 0.8]), np.array([0, 0, 1, 1])) == pytest.approx(0.75)
    g, per = dice_from_counts(np.array([2, 0]), np.array([4, 0]), np.array([2, 0]))
    assert g == pytest.approx(4 / 6) and per == pytest.approx((4 / 6 + 1.0) / 2)


def test_knob_types_are_checked():
    assert check_knobs({"epochs": 3, "size": 64.0}, "x") == {"epochs": 3, "size": 64}
    with pytest.raises(BenchxferError, match="unknown override 'epoch'; allowed: agc"):
        check_knobs({"epoch": 3}, "x")
    with pytest.raises(BenchxferError, match="override batch_size='big' must be an integer"):
        check_knobs({"batch_size": "big"}, "x")


