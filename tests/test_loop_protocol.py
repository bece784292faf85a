"""The training loop follows the second study's fine-tuning rules (issue 13 items 1, 2, 6, 7, 8).

Every expected value is computed here from the study's rule (the AGC formula, Nesterov's update, the
cross-entropy formula, PyTorch's default init bounds, n / count(class)), never from benchxfer's own output.
"""

import math

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from sklearn.metrics import roc_auc_score
from torch.utils.data import TensorDataset

from benchxfer import data, models
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.recipes.parts import OPTIMIZERS, loss_for
from benchxfer.tasks import get_task
from benchxfer.train.checkpoint import CheckpointStore
from benchxfer.train.data_setup import build_data, train_loader, train_sampler
from benchxfer.train.loop import clip_gradients, clipped_parameters, train_run
from benchxfer.train.sampling import DrawnSampler, balanced, class_weights
from benchxfer.train.session import Runtime

pytestmark = pytest.mark.fast


def bit_config(root, **extra):
    knobs = get_recipe("bit-hyperrule").resolve(
        {"arch": "resnet18", "size": 32, "batch_size": 8, "max_steps": 6, "loader_workers": 0, "amp": False,
         **extra}, "test")
    return TrainConfig.from_dict({**knobs, "recipe": "bit-hyperrule", "trial_key": "t", "dataset": "tuberculosis",
                                  "root": str(root), "lr": 1e-3, "seed": 1})


# --- 1. model selection: the last step, no validation set -----------------------------------------

def test_bit_hyperrule_tests_the_last_step(tmp_path):
    root = data.synthetic.write("tuberculosis", tmp_path / "tb", n_train=20, n_val=0, n_test=12, size=32, seed=0)
    cfg = bit_config(root)
    assert build_data(cfg).val is None  # no validation set carved from the training data
    torch.set_num_threads(1)
    res = train_run(cfg, Runtime(trial_dir=str(tmp_path / "run")))
    assert (res.selected, res.last_step, res.best_val_loss) == ("last", 6, None)  # the whole schedule: 6 steps
    assert res.epochs_run == math.ceil(6 / (len(build_data(cfg).train) // 8))

    # the weights after the final step (the newest checkpoint), evaluated here by hand on the test set
    store = CheckpointStore(tmp_path / "run" / "checkpoints")
    state = torch.load(store.path(store.epochs()[-1]), weights_only=True)
    assert state["step"] == 6
    model = models.build_model("resnet18", "binary", 2)
    model.load_state_dict(state["model"])
    model.eval()
    test = build_data(cfg).test
    xs = torch.stack([test[i][0] for i in range(len(test))])
    ys = np.array([int(test[i][1]) for i in range(len(test))])
    with torch.no_grad():
        p1 = model(xs).softmax(1)[:, 1].numpy()  # the positive class's probability
    assert res.test["accuracy"] == pytest.approx(float(((p1 > 0.5) == ys).mean()))
    assert res.test["auroc"] == pytest.approx(roc_auc_score(ys, p1))
    assert res.environment["threads"] == 1 and res.environment["torch"] == torch.__version__


def test_best_val_selection_stays_an_option(tmp_path):
    root = data.synthetic.write("tuberculosis", tmp_path / "tb", n_train=20, n_val=0, n_test=12, size=32, seed=0)
    cfg = bit_config(root, select="best-val")
    assert build_data(cfg).val is None  # tuberculosis has no val split in its protocol
    cfg.dataset_options = {"val_fraction": 0.25}
    assert len(build_data(cfg).val) > 0


def test_lr_search_refuses_a_cell_without_validation_set(tmp_path, monkeypatch):
    from benchxfer.cli import main

    monkeypatch.setenv("BENCHXFER_HOME", str(tmp_path / "home"))
    sweep = tmp_path / "s.yaml"
    sweep.write_text(
        "name: s\nmode: tune-then-repeat\ninits: [scratch]\nrecipe: bit-hyperrule\n"
        "datasets:\n  - {name: tuberculosis, root: synthetic, synthetic: {n_train: 8, n_val: 0, n_test: 4, size: 32}}\n"
        "lr: {search: loguniform, low: 0.0001, high: 0.01, trials: 2}\noverrides: {arch: resnet18}\n")
    res = CliRunner().invoke(main, ["sweep", str(sweep), "--dry-run"])
    assert res.exit_code != 0
    line = res.output.strip().splitlines()[-1]
    assert "no validation set" in line and "val_fraction" in line and "Traceback" not in res.output
    sweep.write_text(sweep.read_text().replace("n_test: 4, size: 32}}", "n_test: 4, size: 32},"
                                               " options: {val_fraction: 0.25}}"))
    res = CliRunner().invoke(main, ["sweep", str(sweep), "--dry-run"])
    assert res.exit_code == 0, res.output


# --- 2. SGD Nesterov, AGC on everything but the head ------------------------------------------------

def test_bit_optimiser_is_nesterov_sgd_without_weight_decay():
    knobs = get_recipe("bit-hyperrule").resolve({}, "test")
    p = torch.nn.Parameter(torch.tensor([1.0, -2.0]))
    opt = OPTIMIZERS.get(knobs["optimizer"])([p], lr=0.1, momentum=knobs["momentum"],
                                              weight_decay=knobs["weight_decay"])
    g = torch.tensor([0.5, 0.25])
    for _ in range(2):
        p.grad = g.clone()
        opt.step()
    # Nesterov by hand: buf1 = g, step 1: p -= lr (g + 0.9 g); buf2 = 0.9 g + g, step 2: p -= lr (g + 0.9 buf2)
    want = torch.tensor([1.0, -2.0]) - 0.1 * (1.9 * g) - 0.1 * (g + 0.9 * 1.9 * g)
    assert torch.allclose(p.detach(), want)


# torch's own loop over the tensors, one by one (its default on the CPU), with the same settings: the reference
LOOP_STEP = {
    "adam": lambda ps, kw: torch.optim.Adam(ps, lr=kw["lr"], weight_decay=kw["weight_decay"], foreach=False),
    "adamw": lambda ps, kw: torch.optim.AdamW(ps, lr=kw["lr"], weight_decay=kw["weight_decay"], foreach=False),
    "sgd": lambda ps, kw: torch.optim.SGD(ps, foreach=False, **kw),
    "sgd-nesterov": lambda ps, kw: torch.optim.SGD(ps, nesterov=True, foreach=False, **kw),
}


@pytest.mark.parametrize("name", OPTIMIZERS.names())
def test_every_optimiser_steps_on_the_cpu_with_the_fused_kernel_and_the_loops_arithmetic(name):
    """On the CPU each optimiser takes torch's fused step, and three steps leave the weights where torch's
    per-tensor loop leaves them, to rounding."""
    assert set(LOOP_STEP) == set(OPTIMIZERS.names())  # a new optimiser needs its reference here
    torch.manual_seed(0)
    shapes = [(3, 4), (4,), (2, 2, 3)]
    start = [torch.randn(s) for s in shapes]
    grads = [[torch.randn(s) for s in shapes] for _ in range(3)]
    kw = {"lr": 0.01, "momentum": 0.9, "weight_decay": 1e-4}

    def three_steps(build):
        params = [torch.nn.Parameter(t.clone()) for t in start]
        opt = build(params)
        for step in grads:
            for p, g in zip(params, step):
                p.grad = g.clone()
            opt.step()
        return opt, params

    opt, got = three_steps(lambda ps: OPTIMIZERS.get(name)(iter(ps), **kw))  # a generator, as model.parameters()
    assert opt.defaults["fused"] is True
    _, want = three_steps(lambda ps: LOOP_STEP[name](ps, kw))
    moved = [not torch.equal(w, s) for w, s in zip(want, start)]
    assert all(moved)
    for g, w in zip(got, want):
        torch.testing.assert_close(g, w, rtol=1e-5, atol=1e-6)


def _unitwise(x):
    return torch.linalg.vector_norm(x, dim=tuple(range(1, x.dim())), keepdim=True) if x.dim() > 1 else x.abs()


def test_agc_clips_the_backbone_and_leaves_the_fresh_head_free():
    torch.manual_seed(0)
    model = models.build_model("resnet18", "binary", 2, "default")
    params = dict(model.named_parameters())
    for p in model.parameters():
        p.grad = torch.full_like(p, 10.0)  # far beyond 0.01 x the weights: AGC must clip every unit it sees
    before = {n: p.grad.clone() for n, p in params.items()}
    clip_gradients(clipped_parameters(model, 2), 0.01)
    # the study's SGD_AGC skips p when p.ndim in (2, 4) and p.shape[0] == output_size (the number of classes)
    exempt = {n for n, p in params.items() if p.dim() in (2, 4) and p.shape[0] == 2}
    assert exempt == {"fc.weight"}
    assert {n for n, p in params.items() if torch.equal(p.grad, before[n])} == exempt
    # the head's bias is clipped as one unit (1-D: the whole vector's norm, as the study's unitwise_norm)
    b = params["fc.bias"].detach()
    want_b = before["fc.bias"] * (0.01 * b.norm().clamp_min(1e-3) / before["fc.bias"].norm())
    assert torch.allclose(params["fc.bias"].grad, want_b, rtol=1e-5)
    # the AGC formula (Brock et al. 2021; timm, eps 1e-3): g * clip * max(||W||, eps) / ||g||, per unit
    w, g = params["layer1.0.conv1.weight"].detach(), before["layer1.0.conv1.weight"]
    want = g * (0.01 * _unitwise(w).clamp_min(1e-3) / _unitwise(g))
    assert torch.allclose(params["layer1.0.conv1.weight"].grad, want, rtol=1e-5)
    # how far the head moves in one SGD step at lr 0.001: lr x 10 per weight, vs 0.01 x its norm if clipped
    head = params["fc.weight"].detach().clone()
    torch.optim.SGD([params["fc.weight"]], lr=1e-3).step()
    moved = (params["fc.weight"].detach() - head).norm(dim=1)
    assert torch.allclose(moved, torch.full((2,), 1e-3 * 10.0 * math.sqrt(512)))
    assert (moved > 1e-3 * 0.01 * _unitwise(head).squeeze(1) * 100).all()  # ~100x more than a clipped head


# --- 6. a full batch every step, drawn with replacement ----------------------------------------------

def test_small_training_set_gives_full_batches_drawn_with_replacement():
    n, batch = 5, 128
    one = DrawnSampler(n, batch, 0, 1, seed=3)
    one.set_epoch(4)
    draw = list(one)
    assert len(draw) == batch and set(draw) <= set(range(n))
    assert len(set(draw)) == n and max(np.bincount(draw)) > 1  # every image, each many times: with replacement
    again = DrawnSampler(n, batch, 0, 1, seed=3)
    again.set_epoch(4)
    assert list(again) == draw  # from (seed, epoch) alone: a resumed run draws the same
    again.set_epoch(5)
    assert list(again) != draw
    shards = []
    for rank in range(2):  # two DDP workers split the one global draw: together a full batch
        s = DrawnSampler(n, batch, rank, 2, seed=3)
        s.set_epoch(4)
        shards.append(list(s))
    assert sorted(shards[0] + shards[1]) == sorted(draw) and len(shards[0]) == len(shards[1]) == batch // 2

    ds = TensorDataset(torch.randn(3, 3), torch.arange(3))  # smaller than the study's micro-batch of 4
    cfg = TrainConfig(batch_size=batch, full_batches=True, loader_workers=0)
    assert isinstance(train_sampler(ds, cfg, 0, 1), DrawnSampler)
    stream = train_loader(ds, cfg, 0, 1, False)
    stream.start(0, 1)
    batches = list(stream.epoch(0))
    assert len(batches) == 1 and len(batches[0][0]) == batch  # the step averages 128 samples, not 3
    stream = train_loader(ds, TrainConfig(batch_size=batch, loader_workers=0), 0, 1, False)
    stream.start(0, 1)
    assert [len(b[0]) for b in stream.epoch(0)] == [3]  # without full_batches: the n images once (first study)


# --- 7. binary tasks: two outputs, cross-entropy, PyTorch's default head ------------------------------

def test_binary_task_has_two_outputs_and_cross_entropy():
    assert models.build_model("resnet18", "binary", 2).fc.out_features == 2
    logits = torch.tensor([[2.0, 0.0], [0.0, 1.0], [0.5, 0.5]])
    target = torch.tensor([0, 1, 1])
    want = [math.log(1 + math.exp(-2)), math.log(1 + math.exp(-1)), math.log(2)]  # -log softmax[target]
    assert loss_for("auto", "binary")(logits, target, None).tolist() == pytest.approx(want)
    task = get_task("binary")
    scores = task.scores(task.probs(logits))  # the positive class's probability: softmax column 1
    assert scores.tolist() == pytest.approx([1 / (1 + math.exp(2)), 1 / (1 + math.exp(-1)), 0.5])


def test_head_init_default_for_bit_normal_for_the_first_study():
    assert get_recipe("bit-hyperrule").resolve({}, "t")["head_init"] == "default"
    assert get_recipe("systematic-cls").resolve({}, "t").get("head_init", "normal") == "normal"
    torch.manual_seed(0)
    head = models.build_model("bit-r50x1", "binary", 2, "default").head.fc  # a fresh 1x1 conv
    assert isinstance(head, torch.nn.Conv2d) and head.kernel_size == (1, 1)
    bound = 1 / math.sqrt(2048)  # PyTorch's default: kaiming-uniform(a=sqrt 5) = U(-1/sqrt(fan_in), ...)
    w = head.weight.detach().flatten()
    assert w.abs().max() <= bound and w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.05)
    assert head.bias.abs().max() <= bound and head.bias.abs().min() > 0
    fc = models.build_model("resnet18", "binary", 2, "normal").fc  # the first study's N(0, 0.01)
    assert fc.weight.std().item() == pytest.approx(0.01, rel=0.1) and torch.all(fc.bias == 0)


# --- 8. COVIDx full data: class-balanced oversampling ------------------------------------------------

def test_covidx_full_data_is_class_balanced():
    labels = [0, 0, 0, 0, 0, 0, 1, 1]
    assert class_weights(labels) == [8 / 6] * 6 + [8 / 2] * 2  # n / count(class)
    assert balanced("auto", "covidx", None) and not balanced("auto", "covidx", 10)  # never in few-shot runs
    assert not balanced("auto", "tuberculosis", None) and balanced("class", "tuberculosis", None)
    assert get_recipe("bit-hyperrule").resolve({}, "t")["balance"] == "auto"
    s = DrawnSampler(len(labels), len(labels), 0, 1, seed=0, weights=class_weights(labels))
    assert len(s) == len(labels)  # num_samples = n
    drawn = []
    for epoch in range(400):
        s.set_epoch(epoch)
        drawn += [labels[i] for i in s]
    assert np.mean(drawn) == pytest.approx(0.5, abs=0.03)  # positives a quarter of the data, half the draws


def test_named_normalisations_are_mapped_not_the_inits():
    from benchxfer.train.data_setup import normalisation

    half = TrainConfig(init="imagenet", normalization="half")  # the chest pre-training's 0.5 / 0.5
    assert tuple(map(tuple, normalisation(half))) == ((0.5,) * 3, (0.5,) * 3)
    unit = TrainConfig(init="imagenet", normalization="unit")
    assert tuple(map(tuple, normalisation(unit))) == ((0.0,) * 3, (1.0,) * 3)
