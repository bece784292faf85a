"""Micro-batches (`micro_batch`): a worker's batch runs in pieces, each piece's mean loss divided by the number
of pieces (the second study: ``loss / batch_split`` in finetune.py, ``loss.div_(ceil(len(data) / local_batch_size))``
in pretrain.py).

With equal pieces on a GroupNorm net (BiT R50x1 from timm, 32 px) that is the plain full-batch gradient of the mean
loss (what one backward over the whole batch gives), on one process and on 2 DDP processes (gloo, CPU, spawned
here; no Ray); unequal pieces and masked BCE follow the study's loop, restated here. Refused, and the tests show
why: a whole-batch loss (the first study's Dice over the flattened batch: its value on a batch is not the mean of
its values on the pieces), and a net with BatchNorm (a ResNet-18's gradient moves far from the batch's and its
running statistics are updated once per piece).
"""

from __future__ import annotations

import math
import socket
from functools import partial

import pytest
import torch
import torch.distributed as dist
import torch.multiprocessing as mp
import torch.nn.functional as F

from benchxfer import data
from benchxfer.errors import BenchxferError
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.recipes.parts import check_micro_batch, loss_for
from benchxfer.train.checkpoint import CheckpointStore
from benchxfer.train.loop import accumulate_gradients, train_run
from benchxfer.train.session import Runtime

pytestmark = pytest.mark.fast

N, CLASSES, SIZE = 8, 5, 32


def batch(seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.randn(N, 3, SIZE, SIZE, generator=g), torch.randint(0, CLASSES, (N,), generator=g)


def bit(seed: int = 0) -> torch.nn.Module:
    """timm's BiT network (ResNetV2 with weight-standardised convs and GroupNorm, as `bit-r50x1`), one block per
    stage instead of 3-4-6-3 so that the test stays fast."""
    from timm.layers import GroupNormAct, StdConv2d
    from timm.models.resnetv2 import ResNetV2

    torch.manual_seed(seed)
    model = ResNetV2(layers=(1, 1, 1, 1), num_classes=CLASSES, stem_type="fixed",
                     conv_layer=partial(StdConv2d, eps=1e-8), norm_layer=partial(GroupNormAct, num_groups=8))
    assert any(isinstance(m, torch.nn.GroupNorm) for m in model.modules())
    assert not any(isinstance(m, torch.nn.modules.batchnorm._BatchNorm) for m in model.modules())
    return model.train()


def grads(model: torch.nn.Module) -> dict[str, torch.Tensor]:
    return {n: p.grad.detach().clone() for n, p in model.named_parameters() if p.grad is not None}


def full_batch_gradient(model, x, y) -> tuple[dict[str, torch.Tensor], float]:
    """The reference: one forward and backward of the whole batch, cross-entropy averaged over it."""
    model.zero_grad(set_to_none=True)
    loss = F.cross_entropy(model(x), y)
    loss.backward()
    return grads(model), float(loss.detach())


def assert_same(got: dict[str, torch.Tensor], want: dict[str, torch.Tensor]) -> None:
    assert got.keys() == want.keys() and len(got) > 40
    for name, g in want.items():
        scale = float(g.abs().max())
        assert scale > 0, name
        assert float((got[name] - g).abs().max()) <= 1e-4 * scale, name  # float32 sums in another order


@pytest.mark.parametrize("micro", [1, 2, 4])  # equal pieces
def test_accumulated_gradient_equals_the_full_batch_gradient(micro):
    torch.set_num_threads(2)
    model, (x, y) = bit(), batch()
    want, want_loss = full_batch_gradient(model, x, y)
    model.zero_grad(set_to_none=True)
    loss = accumulate_gradients(model, loss_for("ce", "multiclass"), x, y, None, micro)
    assert float(loss) == pytest.approx(want_loss, rel=1e-5)
    assert_same(grads(model), want)


def study_pieces_gradient(model, x, y, local: int, loss) -> dict[str, torch.Tensor]:
    """pretrain.py's loop over one batch: pieces of ``local_batch_size``, each loss divided by their number."""
    model.zero_grad(set_to_none=True)
    for i in range(0, len(x), local):
        piece = loss(model(x[i:i + local]), y[i:i + local], i, local)
        piece.div_(math.ceil(float(len(x)) / local))
        piece.backward()
    return grads(model)


def test_a_last_piece_of_fewer_images_weighs_like_a_whole_one_as_in_the_study():
    """Pieces of 3, 3 and 2: each divided by 3 (not weighted by its share), as pretrain.py's loop does."""
    model, (x, y) = bit(), batch()
    want = study_pieces_gradient(model, x, y, 3, lambda out, t, i, k: F.cross_entropy(out, t))
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, loss_for("ce", "multiclass"), x, y, None, 3)
    assert_same(grads(model), want)
    by_share, _ = full_batch_gradient(model, x, y)
    with pytest.raises(AssertionError):  # the share-weighted rule would give another gradient
        assert_same(by_share, want)


@pytest.mark.parametrize("micro", [2, 3])
def test_masked_bce_pieces_average_their_own_known_cells_as_the_studys_pretraining(micro):
    """pretrain.py: ``binary_cross_entropy_with_logits(output[mask], target[mask])`` per piece, divided by the
    number of pieces; the known cells differ from piece to piece."""
    g = torch.Generator().manual_seed(4)
    x = torch.randn(N, 3, SIZE, SIZE, generator=g)
    target = torch.randint(0, 2, (N, CLASSES), generator=g).float()
    known = torch.rand(N, CLASSES, generator=g) > 0.4
    known[0] = False  # an image without a known label
    model = bit()

    def study_loss(out, t, i, k):
        m = known[i:i + k]
        return F.binary_cross_entropy_with_logits(out[m], t[m])

    want = study_pieces_gradient(model, x, target, micro, study_loss)
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, loss_for("masked-bce", "multilabel"), x, target, known.float(), micro)
    assert_same(grads(model), want)


def test_unweighted_pieces_would_differ():
    """The check above can fail: micro-batch means summed without their weights give another gradient."""
    model, (x, y) = bit(), batch()
    want, _ = full_batch_gradient(model, x, y)
    model.zero_grad(set_to_none=True)
    for a in range(0, N, 2):
        F.cross_entropy(model(x[a:a + 2]), y[a:a + 2]).backward()
    with pytest.raises(AssertionError):
        assert_same(grads(model), want)


# --- 2 DDP workers (gloo) ---------------------------------------------------------------------------

def _free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def _ddp_worker(rank: int, world: int, port: int, micro: int, out: str) -> None:
    dist.init_process_group("gloo", init_method=f"tcp://127.0.0.1:{port}", rank=rank, world_size=world)
    try:
        torch.set_num_threads(1)
        x, y = batch()
        share = N // world
        ddp = torch.nn.parallel.DistributedDataParallel(bit())
        syncs = []

        def counting_hook(state, bucket):  # called once per gradient bucket of each synchronising backward
            syncs.append(bucket.index())
            fut = dist.all_reduce(bucket.buffer().div_(world), async_op=True).get_future()
            return fut.then(lambda f: f.value()[0])

        ddp.register_comm_hook(None, counting_hook)
        accumulate_gradients(ddp, loss_for("ce", "multiclass"), x[rank * share:(rank + 1) * share],
                             y[rank * share:(rank + 1) * share], None, micro)
        if rank == 0:
            torch.save({"grads": grads(ddp.module), "syncs": syncs}, out)
    finally:
        dist.destroy_process_group()


def test_two_ddp_workers_accumulate_to_the_full_batch_gradient(tmp_path):
    """2 workers x 4 images (micro-batches of 2: 2 backwards each) give the gradient of all 8 images at once,
    and synchronise exactly as often as one backward of the whole batch does (``no_sync`` before the last)."""
    out = tmp_path / "rank0.pt"
    mp.spawn(_ddp_worker, args=(2, _free_port(), 2, str(out)), nprocs=2, join=True)
    got = torch.load(out, weights_only=True)
    x, y = batch()
    want, _ = full_batch_gradient(bit(), x, y)
    assert_same(got["grads"], want)
    buckets = sorted(set(got["syncs"]))
    assert buckets == list(range(len(buckets))) and sorted(got["syncs"]) == buckets  # each bucket once


# --- a whole-batch loss cannot be split ---------------------------------------------------------------

def test_dice_over_the_flattened_batch_is_refused():
    g = torch.Generator().manual_seed(3)
    logits, noise = torch.randn(4, 1, 16, 16, generator=g), torch.rand(4, 1, 16, 16, generator=g)
    masks = torch.cat([noise[:2] > 0.95, noise[2:] > 0.2]).float()  # small lesions, then large ones
    dice = loss_for("dice", "segmentation")
    whole = float(dice(logits, masks).mean())
    pieces = sum(float(dice(logits[a:a + 2], masks[a:a + 2]).mean()) * 0.5 for a in (0, 2))
    assert abs(whole - pieces) > 1e-3  # a ratio of sums is not the mean of the pieces' ratios

    for loss in ("auto", "dice", "bce-dice"):
        with pytest.raises(BenchxferError, match=r"^where: micro_batch 2 with loss '(dice|bce-dice)'"):
            check_micro_batch({"loss": loss, "micro_batch": 2}, "segmentation", "where")
    check_micro_batch({"loss": "auto", "micro_batch": 0}, "segmentation", "where")  # no split: allowed
    with pytest.raises(BenchxferError, match="with BatchNorm"):  # a per-image loss: the U-Net's BatchNorm remains
        check_micro_batch({"loss": "dice-per-image", "micro_batch": 2}, "segmentation", "where")
    check_micro_batch({"arch": "bit-r50x1", "loss": "auto", "micro_batch": 2}, "multiclass", "where")


# --- a whole run: same steps, same images, same weights --------------------------------------------------

def test_a_run_in_micro_batches_takes_the_same_steps_on_the_same_images(tmp_path):
    root = data.synthetic.write("tuberculosis", tmp_path / "tb", n_train=16, n_val=0, n_test=2, size=32, seed=0)

    def run(micro: int):
        knobs = get_recipe("bit-hyperrule").resolve(
            {"arch": "bit-r50x1", "size": 32, "batch_size": 8, "max_steps": 2, "loader_workers": 0, "amp": False,
             "micro_batch": micro}, "test")
        cfg = TrainConfig.from_dict({**knobs, "recipe": "bit-hyperrule", "trial_key": f"m{micro}",
                                     "dataset": "tuberculosis", "root": str(root), "lr": 1e-3, "seed": 1})
        folder = tmp_path / f"run{micro}"
        res = train_run(cfg, Runtime(trial_dir=str(folder), record_shards=True))
        store = CheckpointStore(folder / "checkpoints")
        state = torch.load(store.path(store.epochs()[-1]), weights_only=True)
        shards = {p.name: p.read_text() for p in sorted((folder / "shards").iterdir())}
        return res, state, shards

    torch.set_num_threads(2)
    whole, state0, shards0 = run(0)
    split, state2, shards2 = run(4)  # batches of 8 in pieces of 4
    assert (split.last_step, split.epochs_run) == (whole.last_step, whole.epochs_run) and whole.last_step == 2
    assert shards2 == shards0 and shards0  # the same images, epoch by epoch
    assert state2["scheduler"] == state0["scheduler"]  # the lr schedule stepped alike
    for name, w in state0["model"].items():
        torch.testing.assert_close(state2["model"][name], w, rtol=1e-4, atol=1e-5, msg=name)


def test_a_sweep_with_micro_batches_and_the_dice_loss_is_refused_before_it_starts(tmp_path, home):
    from click.testing import CliRunner

    from benchxfer.cli import main

    path = tmp_path / "seg.yaml"
    path.write_text("name: seg\ninits: [scratch]\ndatasets: [{name: montgomery-lungs, root: synthetic}]\n"
                    "overrides: {micro_batch: 4}\n")
    out = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert out.exit_code != 0 and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert "micro_batch 4 with loss 'dice'" in out.output and "dice-per-image" in out.output


# --- a net with BatchNorm cannot be split -------------------------------------------------------------

def test_batchnorm_micro_batches_are_not_the_batch_and_are_refused():
    """A ResNet-18 in pieces of 2 of a batch of 8: another gradient (each piece normalised by its own statistics)
    and the running statistics updated 4 times in one step."""
    import torchvision

    torch.manual_seed(0)
    model, (x, y) = torchvision.models.resnet18(num_classes=CLASSES).train(), batch()
    want, _ = full_batch_gradient(model, x, y)
    bn = model.bn1
    bn.reset_running_stats()
    model.zero_grad(set_to_none=True)
    accumulate_gradients(model, loss_for("ce", "multiclass"), x, y, None, 2)
    assert int(bn.num_batches_tracked) == N // 2
    got = grads(model)
    change = max(float((got[k] - w).norm() / w.norm()) for k, w in want.items())
    assert change > 0.2

    for arch, task, loss in (("resnet18", "multiclass", "auto"), ("resnet50", "binary", "auto"),
                             ("resnet50", "segmentation", "bce"), ("resnet50", "multilabel", "masked-bce")):
        with pytest.raises(BenchxferError, match=rf"^where: micro_batch 2 on a {arch} .*with BatchNorm"):
            check_micro_batch({"arch": arch, "loss": loss, "micro_batch": 2}, task, "where")
    check_micro_batch({"arch": "bit-r50x1", "loss": "auto", "micro_batch": 2}, "multiclass", "where")
    check_micro_batch({"arch": "resnet18", "loss": "auto", "micro_batch": 0}, "multiclass", "where")


@pytest.mark.parametrize("micro", [5, 1])
def test_micro_batches_on_a_resnet_are_refused_by_the_dry_run_in_one_line(tmp_path, home, micro):
    """The misuse that passed the dry run and crashed in training (a one-image piece through BatchNorm)."""
    from click.testing import CliRunner

    from benchxfer.cli import main

    path = tmp_path / "cls.yaml"
    path.write_text("name: cls\ninits: [scratch]\ndatasets: [{name: shenzhen, root: synthetic}]\n"
                    f"overrides: {{arch: resnet18, batch_size: 16, micro_batch: {micro}}}\n")
    out = CliRunner().invoke(main, ["sweep", str(path), "--dry-run"])
    assert out.exit_code != 0 and "Traceback" not in out.output
    assert len(out.output.strip().splitlines()) == 1
    assert f"micro_batch {micro} on a resnet18 net with BatchNorm" in out.output


def test_train_set_micro_batches_on_a_resnet_are_refused_before_training(tmp_path, home):
    """``benchxfer train --set`` is held to the sweep file's rule, in one line naming ``--set``, before any folder
    is made (the loop no longer checks again)."""
    from click.testing import CliRunner

    from benchxfer.cli import main

    path = tmp_path / "cls.yaml"
    path.write_text("name: cls\ninits: [scratch]\ndatasets: [{name: shenzhen, root: synthetic}]\n"
                    "overrides: {arch: resnet18, batch_size: 16, epochs: 1}\n")
    out = CliRunner().invoke(main, ["train", str(path), "--set", "micro_batch=2"])
    assert out.exit_code != 0 and "Traceback" not in out.output
    lines = out.output.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("Error: --set: micro_batch 2 on a resnet18 net with BatchNorm: "
                                                   "each micro-batch would be normalised by its own statistics"), lines
    assert not (home / "runs" / "cls" / "local").exists()


@pytest.mark.parametrize("micro,n", [(0, 8), (3, 8), (8, 8), (12, 8), (1, 1)])
def test_the_loop_cuts_the_pieces_the_dry_run_counts(micro, n):
    """One rule for the effective micro-batch (``recipes.config.micro_images``): the pieces the loop feeds the net
    are the images per pass the dry run's column and the GPU pre-flight count."""
    from benchxfer.recipes.config import micro_images

    seen: list[int] = []
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(3 * SIZE * SIZE, CLASSES))
    model.register_forward_pre_hook(lambda _, args: seen.append(len(args[0])))
    x, y = batch()
    accumulate_gradients(model, loss_for("ce", "multiclass"), x[:n], y[:n], None, micro)
    assert seen[0] == micro_images(micro, n) == TrainConfig(batch_size=n, micro_batch=micro).images_per_pass(1)
    assert sum(seen) == n and len(seen) == math.ceil(n / seen[0])
