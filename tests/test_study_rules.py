"""Issue 22's protocol points, each against a value computed here from the study's own rule:

- label fraction: Version1/dataloader.py shuffles ``np.arange(n)`` with ``random.Random(99)`` and keeps the first
  ``int(n * percent / 100)`` -- whatever the run's seed;
- cosine lr (segmentation): Version1/engine.py trains epoch ``epoch``, then sets ``cosine_anneal_schedule(epoch)``;
- few-shot batches: finetune.py loads micro-batches of batch // batch_split (4; 64 for CIFAR) from a
  ``RandomSampler(replacement=True)`` only when the set is smaller than one micro-batch, otherwise from
  ``recycle(DataLoader(shuffle=True))``: consecutive shuffled passes;
- MixUp: finetune.py ``mixup_data`` pairs by ``torch.randperm``, ``np.random.beta(a, a)`` once per step;
- class-balanced oversampling for Flowers full data (flowers_oversampling.yaml, ``oversampling: true``).
"""

import math
import random

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from scipy import stats
from torch.utils.data import TensorDataset

from benchxfer.data.labels import fraction_subset
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.recipes.parts import loss_for, mixup, mixup_lambda
from benchxfer.recipes.schedules import ScheduleInput, build_schedule
from benchxfer.train.data_setup import train_loader, train_sampler
from benchxfer.train.sampling import CycledSampler, DrawnSampler, balanced, small_set_sampler

pytestmark = pytest.mark.fast


# --- label fraction -------------------------------------------------------------------------------

@pytest.mark.parametrize("n, percent", [(1000, 50), (437, 25), (30, 10)])
def test_label_fraction_is_the_studys_fixed_draw(n, percent):
    indexes = np.arange(n)
    random.Random(99).shuffle(indexes)  # the study's annotation_percent draw
    want = indexes[: int(indexes.shape[0] * percent / 100.0)]
    np.testing.assert_array_equal(fraction_subset(n, percent / 100), want)


def test_label_fraction_keeps_the_studys_count_where_float_rounding_differs():
    """``int(n * percent / 100.0)`` with the study's integer percent: at 70 % it differs from ``int(n * 0.7)`` for
    70 of the sizes 1-5000, each checked here (and a few where both rules agree)."""
    sizes = [n for n in range(1, 5001) if int(n * 70 / 100.0) != int(n * 0.7)]
    assert len(sizes) == 70
    for n in sizes + [10, 463, 4999]:
        indexes = np.arange(n)
        random.Random(99).shuffle(indexes)
        np.testing.assert_array_equal(fraction_subset(n, 0.7), indexes[: int(indexes.shape[0] * 70 / 100.0)])


@pytest.mark.parametrize("name, cut", [("shenzhen", True), ("chexpert", True), ("chestxray14", False)])
def test_label_fraction_cuts_val_and_test_of_chexpert_and_shenzhen_as_the_study(tmp_path, name, cut):
    """main_classification.py passes ``annotation_percent`` to the train, val and test sets of CheXpert and
    Shenzhen, and to none of ChestX-ray14's (benchxfer cuts its training list only, an option of its own)."""
    from benchxfer import data
    from benchxfer.train.data_setup import build_data

    root = data.synthetic.write(name, tmp_path / name, n_train=20, n_val=10, n_test=9, size=16, seed=0)
    knobs = get_recipe("systematic-cls").resolve({"loader_workers": 0}, "t")
    opts = {} if name != "chexpert" else {"val_fraction": 0.3}
    cfg = TrainConfig.from_dict({**knobs, "dataset": name, "root": str(root), "recipe": "systematic-cls",
                                 "dataset_options": {**opts, "fraction": 0.5}})
    rd = build_data(cfg)
    for split, ds in (("train", rd.train), ("val", rd.val), ("test", rd.test)):
        whole = data.open_dataset(name, root, split, **opts)
        n = len(whole)
        indexes = np.arange(n)
        random.Random(99).shuffle(indexes)  # dataloader.py's draw over the split's own list
        want = indexes[: int(n * 50 / 100.0)] if cut or split == "train" else np.arange(n)
        assert [r.image for r in (ds.records[i] for i in ds.indices)] == [whole.records[i].image for i in want]


def test_label_fraction_is_the_same_for_every_seed(tmp_path):
    from benchxfer import data

    root = data.synthetic.write("chestxray14", tmp_path / "nih", n_train=40, n_val=4, n_test=4, size=16, seed=0)
    subsets = [data.open_dataset("chestxray14", root, "train", fraction=0.5, seed=s) for s in (0, 1, 7)]
    images = [[r.image for r in (ds.records[i] for i in ds.indices)] for ds in subsets]
    assert images[0] == images[1] == images[2] and len(images[0]) == 20


# --- cosine lr per epoch, set after each epoch ----------------------------------------------------

def _study_cosine(t: int, epochs: int, lr: float) -> float:
    """Version1/utils.py ``cosine_anneal_schedule`` (M = 1)."""
    cos_inner = np.pi * (t % (epochs // 1)) / (epochs // 1)
    return float(lr / 2 * (np.cos(cos_inner) + 1))


def test_cosine_lr_is_stepped_the_studys_way():
    lr, epochs = 1e-3, 12
    study, group_lr = [], lr  # the study: Adam starts at lr; after epoch e the lr becomes cosine(e)
    for epoch in range(epochs):
        study.append(group_lr)
        group_lr = _study_cosine(epoch, epochs, lr)
    p = torch.nn.Parameter(torch.zeros(1))
    opt = torch.optim.Adam([p], lr=lr)
    sched = build_schedule("cosine-epoch", opt, ScheduleInput(epochs, 1, 10, 0, 0.5, 5, 1e-4))
    ours = []
    for _ in range(epochs):
        ours.append(opt.param_groups[0]["lr"])
        opt.step()  # the epoch's training (no gradient: nothing moves), then the loop's end-of-epoch step
        sched.scheduler.step()
    assert ours == pytest.approx(study, rel=1e-12)
    assert ours[0] == ours[1] == lr  # epoch 0 at the full lr, epoch 1 at cosine(0) = lr


# --- few-shot batches: replacement only below one micro-batch, else shuffled passes ----------------

@pytest.mark.parametrize("dataset, n, replacement", [
    ("tuberculosis", 3, True), ("tuberculosis", 4, False), ("tuberculosis", 100, False),
    ("cifar10", 10, True), ("cifar10", 50, True), ("cifar10", 64, False), ("cifar10", 100, False),
    ("flowers102", 102, False)])
def test_replacement_only_below_the_studys_micro_batch(dataset, n, replacement):
    micro = 128 // (2 if dataset.startswith("cifar") else 32)  # batch // batch_split of the study's configs
    assert (n < micro) == replacement
    s = small_set_sampler(n, 128, dataset, 0, 1, seed=2)
    assert isinstance(s, DrawnSampler if replacement else CycledSampler)


def test_cycled_passes_are_shuffled_passes_over_the_set():
    n, batch, seed = 10, 128, 5
    s = CycledSampler(n, batch, 0, 1, seed)
    stream = []
    for epoch in range(3):  # one step per epoch (the set is smaller than a batch)
        s.set_epoch(epoch)
        stream += list(s)
    assert len(stream) == 3 * batch
    full_passes = len(stream) // n
    for p in range(full_passes):  # every consecutive block of n is one permutation of the set: no repeats
        assert sorted(stream[p * n:(p + 1) * n]) == list(range(n))
    counts = np.bincount(stream, minlength=n)
    assert counts.max() - counts.min() <= 1  # each image seen as often as the others, unlike draws with replacement
    again = CycledSampler(n, batch, 0, 1, seed)
    again.set_epoch(2)
    assert list(again) == stream[2 * batch:]  # from (seed, epoch) alone: a resumed run sees the same
    shards = []
    for rank in range(2):
        r = CycledSampler(n, batch, rank, 2, seed)
        r.set_epoch(1)
        shards.append(list(r))
    assert sorted(shards[0] + shards[1]) == sorted(stream[batch:2 * batch])

    ds = TensorDataset(torch.randn(n, 3), torch.arange(n))
    cfg = TrainConfig(batch_size=batch, full_batches=True, loader_workers=0)
    assert isinstance(train_sampler(ds, cfg, 0, 1), CycledSampler)
    stream = train_loader(ds, cfg, 0, 1, False)
    stream.start(0, 1)
    (batch0,) = list(stream.epoch(0))
    # the study's micro-batches of 4 (the last of each pass of 10 holds 2): 32 of them, 108 images
    assert len(batch0[0]) == sum(stream.pieces(0)) == 108 and sorted(batch0[0][:n].tolist()) == list(range(n))


def _study_micro_batch_sizes(n: int, micro: int, count: int) -> list[int]:
    """finetune.py: ``recycle(DataLoader(train_set, batch_size=micro_batch_size, shuffle=True, drop_last=False))``,
    the sizes of its first ``count`` micro-batches."""
    sizes: list[int] = []
    while len(sizes) < count:
        sizes += [len(b) for b in torch.utils.data.DataLoader(range(n), batch_size=micro, shuffle=True)]
    return sizes[:count]


@pytest.mark.parametrize("n", [10, 20, 37])
def test_few_shot_steps_are_the_studys_micro_batches_of_recycled_passes(n):
    """finetune.py takes batch_split (32) micro-batches of 4 from the recycled loader a step, each loss divided by
    32: a pass of n images ends in a partial micro-batch (n mod 4) that counts as a whole one, so a step of a
    10-image set averages 32 x 10 / 3 = 106.7 images, not 128."""
    batch, micro, split = 128, 4, 32
    s = small_set_sampler(n, batch, "tuberculosis", 0, 1, seed=3)
    want = _study_micro_batch_sizes(n, micro, 6 * split)
    seen = []
    for epoch in range(6):  # one step per epoch
        assert s.pieces_of(epoch) == want[epoch * split:(epoch + 1) * split]
        s.set_epoch(epoch)
        seen += list(s)
        assert len(list(s)) == sum(s.pieces_of(epoch))
    per_pass = -(-n // micro)
    for p in range(len(want) // per_pass):  # the micro-batches of each pass are one permutation of the set
        assert sorted(seen[p * n:(p + 1) * n]) == list(range(n))
    if n == 10:
        assert sum(want[:3 * split]) / 3 == pytest.approx(106.67, abs=0.01)
    shards = [CycledSampler(n, batch, r, 4, 3, micro=micro).pieces_of(2) for r in range(4)]  # 4 DDP workers
    assert [len(p) for p in shards] == [8] * 4 and sorted(sum(shards, [])) == sorted(want[2 * split:3 * split])


def test_a_step_weighs_each_micro_batch_as_the_study_whatever_its_size():
    """``loss / batch_split`` per micro-batch: a partial one weighs like a whole one."""
    from benchxfer.train.loop import accumulate_gradients

    torch.manual_seed(0)
    model = torch.nn.Linear(6, 3)
    sizes = [4, 4, 2, 4, 4, 2]
    x, y = torch.randn(sum(sizes), 6), torch.randint(0, 3, (sum(sizes),))
    model.zero_grad()
    a = 0
    for k in sizes:  # the study's loop
        (F.cross_entropy(model(x[a:a + k]), y[a:a + k]) / len(sizes)).backward()
        a += k
    want = [p.grad.clone() for p in model.parameters()]
    model.zero_grad()
    accumulate_gradients(model, loss_for("ce", "multiclass"), x, y, None, 4, sizes=sizes)
    for g, w in zip((p.grad for p in model.parameters()), want):
        torch.testing.assert_close(g, w)


# --- MixUp: a random permutation, one lambda per step ---------------------------------------------

def test_mixup_pairs_by_a_random_permutation_with_the_studys_loss():
    torch.manual_seed(0)
    x, y = torch.randn(8, 3, 4, 4), torch.randint(0, 5, (8,))
    logits = torch.randn(8, 5)
    lam = 0.3
    torch.manual_seed(11)
    mixed, soft = mixup(x, y, lam, 5)
    torch.manual_seed(11)
    indices = torch.randperm(8)  # the study's mixup_data
    torch.testing.assert_close(mixed, lam * x + (1 - lam) * x[indices])
    study = lam * F.cross_entropy(logits, y) + (1 - lam) * F.cross_entropy(logits, y[indices])
    torch.testing.assert_close(loss_for("ce", "multiclass")(logits, soft, None).mean(), study)
    assert not torch.equal(indices, torch.arange(8).flip(0))


def test_mixup_pairs_within_the_studys_micro_batches():
    """finetune.py: the loader yields micro-batches of 128 / batch_split (4) images and ``mixup_data`` runs on each:
    ``torch.randperm(4)`` per micro-batch, so an image is paired with itself with probability 1/4 (1/32 over a
    worker's 32)."""
    g = torch.Generator().manual_seed(0)
    x, y = torch.randn(32, 3, 4, 4, generator=g), torch.randint(0, 5, (32,), generator=g)
    lam = 0.3
    torch.manual_seed(7)
    mixed, soft = mixup(x, y, lam, 5, group=4)
    torch.manual_seed(7)
    want_x, want_y = [], []
    for a in range(0, 32, 4):  # the study's loop: one micro-batch at a time
        xm, ym = x[a:a + 4], F.one_hot(y[a:a + 4], 5).float()
        indices = torch.randperm(xm.shape[0])
        want_x.append(lam * xm + (1 - lam) * xm[indices])
        want_y.append(lam * ym + (1 - lam) * ym[indices])
    torch.testing.assert_close(mixed, torch.cat(want_x))
    torch.testing.assert_close(soft, torch.cat(want_y))

    def self_paired(group: int, batches: int = 400) -> float:
        torch.manual_seed(1)
        same = sum(int((mixup(x, y, lam, 5, group=group)[0] - x).flatten(1).abs().amax(1).lt(1e-6).sum())
                   for _ in range(batches))
        return same / (batches * 32)

    assert self_paired(4) == pytest.approx(1 / 4, abs=0.02)
    assert self_paired(0) == pytest.approx(1 / 32, abs=0.01)


def test_mixup_lambda_is_one_beta_draw_per_step_the_same_on_every_worker():
    lams = np.array([mixup_lambda(0.1, 3, step) for step in range(3000)])
    assert mixup_lambda(0.1, 3, 17) == mixup_lambda(0.1, 3, 17)  # any worker, any retry: the same
    assert len(set(lams[:100].tolist())) == 100  # a new one each step
    assert stats.kstest(lams, stats.beta(0.1, 0.1).cdf).pvalue > 1e-3  # np.random.beta(0.1, 0.1) of the study
    assert math.isclose(lams.mean(), 0.5, abs_tol=0.05)


# --- Flowers full data: class-balanced -------------------------------------------------------------

def test_flowers_full_data_is_class_balanced_like_covidx():
    from benchxfer.data import DATASETS

    # the study's own list: oversampling: true in covidx_cxr2.yaml and flowers_oversampling.yaml, nowhere else
    assert {name for name, cfg in DATASETS.items() if cfg.auto_balanced} == {"covidx", "flowers102"}
    for name, cfg in DATASETS.items():  # the sampler follows each dataset's entry, never with shots
        assert balanced("auto", name, None) == cfg.auto_balanced and not balanced("auto", name, 5), name
        assert balanced("class", name, None) and not balanced("none", name, None), name
    assert get_recipe("bit-hyperrule").resolve({}, "t")["balance"] == "auto"


def test_every_datasets_micro_batch_is_its_entrys():
    """The study's micro-batch per set (batch 128 / batch_split: 4, CIFAR's 64) is in each dataset's entry; the
    few-shot sampler draws with replacement exactly below it, for every registered dataset."""
    from benchxfer.data import DATASETS

    assert {name: cfg.study_micro_batch for name, cfg in DATASETS.items() if cfg.study_micro_batch != 4} == {
        "cifar10": 64, "cifar100": 64}
    for name, cfg in DATASETS.items():
        micro = cfg.study_micro_batch
        assert isinstance(small_set_sampler(micro - 1, 128, name, 0, 1, seed=2), DrawnSampler), name
        assert isinstance(small_set_sampler(micro, 128, name, 0, 1, seed=2), CycledSampler), name


# --- SimCLR: ImageNet statistics by default, as the first study fed every init ------------------------

def test_simclr_inits_get_imagenet_statistics_by_default():
    from benchxfer.train.data_setup import normalisation

    study = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # Version1/dataloader.py, normalize == "imagenet"
    for init in ("simclr-v1", "simclr-v2", "moco-v2"):
        mean, std = normalisation(TrainConfig(init=init))
        assert (list(mean), list(std)) == study
    mean, std = normalisation(TrainConfig(init="simclr-v1", normalization="init-trained"))
    assert (tuple(mean), tuple(std)) == ((0.0,) * 3, (1.0,) * 3)  # the option: SimCLR's own [0, 1] inputs
    assert [list(v) for v in normalisation(TrainConfig(init="moco-v2", normalization="init-trained"))] == list(study)


# --- Shenzhen in the first study: one sigmoid output with BCE ------------------------------------------

def test_shenzhen_first_study_has_one_sigmoid_output_and_bce(tmp_path):
    from benchxfer import data, models
    from benchxfer.tasks import get_task
    from benchxfer.train.data_setup import build_data

    root = data.synthetic.write("shenzhen", tmp_path / "sz", n_train=8, n_val=4, n_test=4, size=16, seed=0)
    knobs = get_recipe("systematic-cls").resolve({"arch": "resnet18", "size": 16}, "t")
    first = build_data(TrainConfig.from_dict({**knobs, "dataset": "shenzhen", "root": str(root)}))
    assert first.task == "binary-1" and models.build_model("resnet18", first.task, 2).fc.out_features == 1
    # Version1: ShenzhenCXR(num_class=1), ClassificationNet(..., activation="sigmoid"), torch.nn.BCELoss()
    logits, target = torch.tensor([[2.0], [-1.0], [0.3]]), torch.tensor([1, 0, 0])
    study = torch.nn.BCELoss()(torch.sigmoid(logits), target.float().view(-1, 1))
    task = get_task(first.task)
    torch.testing.assert_close(loss_for("auto", first.task)(logits, target, None).mean(), study)
    torch.testing.assert_close(task.scores(task.probs(logits)), torch.sigmoid(logits).flatten())  # AUROC's scores
    # the second study's rule (2 outputs + cross-entropy) stays bit-hyperrule's
    bit = get_recipe("bit-hyperrule").resolve({"arch": "resnet18", "size": 16}, "t")
    second = build_data(TrainConfig.from_dict({**bit, "dataset": "shenzhen", "root": str(root)}))
    assert second.task == "binary" and get_task(second.task).outputs(2) == 2
