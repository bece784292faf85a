"""docs/protocols.md's rows, each checked against a value computed here from the study's rule as its code states
it (BenchmarkTransferLearning ``Version1/``, large-scale-pretraining-transfer), never against benchxfer's own
constant: a test here fails when benchxfer's default moves away from the study.
"""

import hashlib
import math

import cv2
import numpy as np
import pytest
import torch
from PIL import Image
from scipy import ndimage
from torchvision import transforms as T1

from benchxfer import data
from benchxfer.data import transforms
from benchxfer.data.readers._common import shipped_split
from benchxfer.recipes import TrainConfig, get_recipe
from benchxfer.recipes.parts import LOSSES
from benchxfer.recipes.schedules import ScheduleInput, build_schedule
from benchxfer.train.data_setup import build_data
from benchxfer.train.loop import set_up
from benchxfer.train.session import Runtime

pytestmark = pytest.mark.fast

IMAGENET = ([0.485, 0.456, 0.406], [0.229, 0.224, 0.225])  # both studies' default Normalize


def recipe_config(recipe: str, **extra) -> TrainConfig:
    """A config with the recipe's defaults, as a sweep without overrides gets it."""
    rec = get_recipe(recipe)
    return TrainConfig.from_dict({**rec.resolve({}, "test"), "recipe": recipe, "lr": rec.default_lr, **extra})


def schedule_input(cfg: TrainConfig, **extra) -> ScheduleInput:
    return ScheduleInput(**{"epochs": cfg.epochs, "steps_per_epoch": 1, "n_train": 1000,
                            "warmup_epochs": cfg.warmup_epochs, "plateau_factor": cfg.plateau_factor,
                            "plateau_patience": cfg.plateau_patience, "plateau_threshold": cfg.plateau_threshold,
                            **extra})


# --- systematic-cls ---------------------------------------------------------------------------------

def test_plateau_schedule_is_stepped_the_studys_way():
    """engine.py: ``ReduceLROnPlateau(optimizer, factor=0.5, patience=args.patience // 2, mode='min',
    threshold=0.0001, min_lr=0)`` with ``--patience`` 10, stepped once per epoch on the val loss."""
    losses = [1.0, 0.9, 0.95, 0.9, 0.91, 0.92, 0.93, 0.94, 0.899995, 0.85, 0.86, 0.87, 0.88, 0.89, 0.9, 0.91,
              0.92, 0.93, 0.94, 0.95, 0.96, 0.97, 0.98]

    def lrs(sched, opt):
        out = []
        for value in losses:
            sched.step(value)
            out.append(opt.param_groups[0]["lr"])
        return out

    p = torch.nn.Parameter(torch.zeros(1))
    study_opt = torch.optim.Adam([p], lr=2e-4)
    study = torch.optim.lr_scheduler.ReduceLROnPlateau(study_opt, factor=0.5, patience=10 // 2, mode="min",
                                                       threshold=0.0001, min_lr=0)
    want = lrs(study, study_opt)
    cfg = recipe_config("systematic-cls")
    opt = torch.optim.Adam([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    got = build_schedule(cfg.schedule, opt, schedule_input(cfg))
    assert got.on_metric and not got.per_step
    assert lrs(got.scheduler, opt) == pytest.approx(want, rel=1e-12)
    # by hand: best 0.9 at epoch 1 (0.899995 is within the 1e-4 relative threshold); 6 bad epochs -> halved at
    # epoch 7; best 0.85 at epoch 9; 6 bad epochs -> halved at 15, again 6 later at 21
    assert [i for i in range(1, len(want)) if want[i] < want[i - 1]] == [7, 15, 21]


def test_base_lr_is_the_studys():
    # main_classification.py --lr 2e-4; main_segmentation.py --learning_rate 0.001; every fine-tuning config
    # of the second study: base_lr 0.001 (flowers_high_lr.yaml aside), SGD_AGC
    assert get_recipe("systematic-cls").default_lr == 2e-4
    assert get_recipe("systematic-seg").default_lr == 0.001
    cfg = recipe_config("bit-hyperrule")
    assert cfg.lr == 0.001 and cfg.agc > 0

    def study_get_lr(step, dataset_size, base_lr):  # bit_hyperrule.get_lr, as the study's finetune.py calls it
        supports = [100, 200, 300, 400, 500] if dataset_size < 20_000 else [500, 3000, 6000, 9000, 10_000]
        if step < supports[0]:
            return base_lr * step / supports[0]
        if step >= supports[-1]:
            return None
        for s in supports[1:]:
            if s < step:
                base_lr /= 10
        return base_lr

    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=cfg.lr)
    sched = build_schedule(cfg.schedule, opt, schedule_input(cfg, n_train=1000))
    for step in range(500):
        assert opt.param_groups[0]["lr"] == pytest.approx(study_get_lr(step, 1000, 0.001), rel=1e-9, abs=1e-15)
        opt.step()
        sched.scheduler.step()


def test_list_splits_are_the_studys_files(tmp_path):
    """The shipped lists are Version1/dataset/*.txt byte for byte (sha256 at commit 5656fec), and the readers
    read each line as the study's dataloader.py: ``name l1 .. l14`` (ChestX-ray14), ``name,label`` (Shenzhen)."""
    study_sha256 = {
        "ShenzenCXR_train_data.txt": "77ac16bc43b60edcc8a21ac95bd98804562836e66245fe7cad15ae8faa653c73",
        "ShenzenCXR_valid_data.txt": "b8e0ea0e25901f9ff57c09fa449e82019d452a64050317e87088cbf104bdfc23",
        "ShenzenCXR_test_data.txt": "3bff5fa60628785a2c690a8c4e9983dd46a5b03bd18d23f8fef9863779065145",
        "Xray14_train_official.txt": "60cc170f312a2301e5c9a8860fe36437e0ee632b4da8a890b855a669fe3069f4",
        "Xray14_val_official.txt": "4ea551a628d287bbe19f474408975acfbee98437245956531101cbdab5c4c090",
        "Xray14_test_official.txt": "7fa6a1865c16b416ed0cd96954fbbb3945f8ea20c39c22521e068859cda4c7cf",
    }
    for name, digest in study_sha256.items():
        assert hashlib.sha256(shipped_split(name).read_bytes()).hexdigest() == digest, name

    def lines(name):
        return [ln for ln in shipped_split(name).read_text().splitlines() if ln.strip()]

    shenzhen = tmp_path / "shenzhen"
    (shenzhen / "CXR_png").mkdir(parents=True)
    want = {s: [ln.split(",") for ln in lines(f"ShenzenCXR_{s}_data.txt")] for s in ("train", "valid", "test")}
    for rows in want.values():
        for name, _ in rows:
            (shenzhen / "CXR_png" / name).touch()  # the reader only lists the folder
    for split, listed in (("train", "train"), ("val", "valid"), ("test", "test")):
        ds = data.open_dataset("shenzhen", shenzhen, split)
        assert [r.image.rsplit("/", 1)[1] for r in ds.records] == [n for n, _ in want[listed]]
        assert ds.targets.tolist() == [int(lab) for _, lab in want[listed]]
    assert [len(want[s]) for s in ("train", "valid", "test")] == [463, 65, 134]

    nih = tmp_path / "nih"
    (nih / "images").mkdir(parents=True)
    rows = [ln.split() for ln in lines("Xray14_val_official.txt")]
    for name, *_ in rows:
        (nih / "images" / name).touch()
    ds = data.open_dataset("chestxray14", nih, "val")
    assert [r.image.rsplit("/", 1)[1] for r in ds.records] == [r[0] for r in rows]
    np.testing.assert_array_equal(ds.targets, np.asarray([[float(v) for v in r[1:]] for r in rows], np.float32))


def test_training_crops_come_from_the_original_resolution(tmp_path):
    """dataloader.py: RandomResizedCrop(224), RandomHorizontalFlip, RandomRotation(7), ToTensor, Normalize on the
    image as stored; a smaller preprocessed cache next to it must not be read."""
    root = data.synthetic.write("chestxray14", tmp_path / "nih", n_train=3, n_val=1, n_test=1, size=320)
    cache = tmp_path / "cache"
    data.cache.write_cache("chestxray14", root, 256, ("train",), cache_dir=cache)
    cfg = recipe_config("systematic-cls", dataset="chestxray14", root=str(root), init="imagenet",
                        dataset_options={"cache_dir": str(cache)})
    train = build_data(cfg).train
    study = T1.Compose([T1.RandomResizedCrop(224), T1.RandomHorizontalFlip(), T1.RandomRotation(7), T1.ToTensor(),
                        T1.Normalize(*IMAGENET)])
    for i in range(len(train)):
        original = Image.open(train.records[train.indices[i]].image).convert("RGB")  # the study: .convert('RGB')
        assert original.size == (320, 320)
        for seed in (0, 1):
            torch.manual_seed(seed)
            want = study(original)
            torch.manual_seed(seed)
            got = train[i][0]
            torch.testing.assert_close(got, want, atol=1e-5, rtol=0)


# --- systematic-seg: the inputs each set was fed ----------------------------------------------------------

def _seg_pair(size=40):
    rng = np.random.default_rng(0)
    from torchvision import tv_tensors

    img = rng.integers(0, 256, (size, size + 8), dtype=np.uint8)
    mask = (rng.random((size, size + 8)) > 0.5).astype(np.uint8)
    return img, tv_tensors.Image(torch.from_numpy(img)[None]), tv_tensors.Mask(torch.from_numpy(mask)[None])


@pytest.mark.parametrize("name", ["montgomery-lungs", "siim-pneumothorax"])
def test_montgomery_and_siim_training_inputs(name):
    """dataloader.py (MontgomeryDataset, PNEDataset): ``cv2.resize(image, (224, 224), interpolation=INTER_NEAREST)``,
    then the training transform (train; ``build_transform_segmentation``), ``/ 255.`` with ``--normalization``
    None (no mean/std)."""
    raw, img, mask = _seg_pair()
    study = cv2.resize(raw, (32, 32), interpolation=cv2.INTER_NEAREST) / 255.0
    pipe = transforms.build("systematic-seg", train=True, size=32, mean=IMAGENET[0], std=IMAGENET[1],
                            task="segmentation", dataset=name)
    plain, changed = 0, 0
    for seed in range(40):
        torch.manual_seed(seed)
        out, _ = pipe(img, mask)
        if np.allclose(out[0].numpy(), study, atol=1e-6):
            plain += 1  # the draw that applied none of the augmentations (p = 0.7 x 0.7 x 0.75)
        else:
            changed += 1
    assert plain > 5 and changed > 5


def test_drive_inputs():
    """dataloader.py (DriveDataset): ``cv2.resize(im, (size, size))`` (bilinear), ``/ 255.``, then ImageNet mean and
    std per channel; no online augmentation (the study trained on an offline-augmented copy)."""
    raw, img, mask = _seg_pair()
    rgb = np.repeat(raw[:, :, None], 3, axis=2)
    study = cv2.resize(rgb, (32, 32)).astype(np.float32) / 255.0
    study = (study - np.asarray(IMAGENET[0], np.float32)) / np.asarray(IMAGENET[1], np.float32)
    pipe = transforms.build("systematic-seg", train=True, size=32, mean=(0.5,) * 3, std=(0.5,) * 3,
                            task="segmentation", dataset="drive")
    for seed in range(5):
        torch.manual_seed(seed)
        out, _ = pipe(img, mask)
        np.testing.assert_allclose(out.permute(1, 2, 0).numpy(), study, atol=1e-5)


def test_drive_masks_are_resized_bilinear_and_thresholded_at_127():
    """dataloader.py (DriveDataset): the 0/255 vessel mask ``cv2.resize(label, (size, size))`` (bilinear), then
    ``cv2.threshold(temp, 127, 255, cv2.THRESH_BINARY)``, ``/ 255.`` -- on thin vessels a nearest-neighbour resize
    keeps other pixels."""
    from torchvision import tv_tensors

    h, w, size = 584, 565, 64
    vessels = np.zeros((h, w), np.uint8)
    rng = np.random.default_rng(1)
    for _ in range(40):  # lines 2-12 px wide, as DRIVE's vessels at 565 px
        x0, y0, x1, y1 = (int(v) for v in rng.integers(0, min(h, w), 4))
        cv2.line(vessels, (x0, y0), (x1, y1), 255, int(rng.integers(2, 13)))
    study = cv2.threshold(cv2.resize(vessels, (size, size)), 127, 255, cv2.THRESH_BINARY)[1] / 255.0
    nearest = cv2.resize(vessels, (size, size), interpolation=cv2.INTER_NEAREST) / 255.0
    assert (study != nearest).sum() > 50  # the two rules differ on this mask
    pipe = transforms.build("systematic-seg", train=True, size=size, task="segmentation", dataset="drive")
    image = tv_tensors.Image(torch.zeros((3, h, w), dtype=torch.uint8))
    for stored in (vessels, vessels // 255):  # read as 0/255 or as 0/1: the same mask
        _, mask = pipe(image, tv_tensors.Mask(torch.from_numpy(stored)[None]))
        np.testing.assert_array_equal(mask.numpy(), study)


# --- supervised-pretrain (the second study's chest pre-training) ---------------------------------------------

def study_pretrain_lr(step: int, steps_per_epoch: int, workers: int, local_batch: int) -> float:
    """lr_scheduler/builder.py's adjust_learning_rate_step with the chest configs (base_lr 0.01, base_batch_size
    256, warmup_epochs 15, gradient_accumulate 1), K = hvd.size(); ``step`` counts from 0."""
    epoch, batch_idx = divmod(step, steps_per_epoch)
    k = workers
    init_lr = 0.01 * local_batch / 256
    if epoch < 15:
        e = epoch + float(batch_idx + 1) / steps_per_epoch
        lr_adj = 1.0 / k * (e * (k - 1) / 15 + 1)
    elif epoch < 30:
        lr_adj = 1.0
    elif epoch < 60:
        lr_adj = 1e-1
    elif epoch < 80:
        lr_adj = 1e-2
    else:
        lr_adj = 1e-3
    return init_lr * k * 1 * lr_adj


@pytest.mark.parametrize("workers", [1, 4, 32])
def test_pretrain_lr_and_warm_up_from_lr_over_k(workers):
    cfg = recipe_config("supervised-pretrain", batch_size=16 * workers)
    spe = 7
    full = cfg.lr * cfg.batch_size / cfg.base_batch  # the loop's linear scaling
    opt = torch.optim.SGD([torch.nn.Parameter(torch.zeros(1))], lr=full)
    sched = build_schedule(cfg.schedule, opt, schedule_input(cfg, steps_per_epoch=spe, workers=workers))
    assert sched.per_step
    got = []
    for _ in range(cfg.epochs * spe):
        got.append(opt.param_groups[0]["lr"])
        opt.step()
        sched.scheduler.step()
    want = [study_pretrain_lr(s, spe, workers, 16) for s in range(cfg.epochs * spe)]
    assert got == pytest.approx(want, rel=1e-9)
    assert cfg.epochs == 90
    # the first step: lr / K plus one step's worth of the line
    assert got[0] == pytest.approx(full / workers * (1 + (workers - 1) / (15 * spe)))


def _pretrain_cfg(tmp_path, **extra):
    root = data.synthetic.write("chexpert", tmp_path / "chex", n_train=6, n_val=0, n_test=4, size=24)
    knobs = get_recipe("supervised-pretrain").resolve({"arch": "resnet18", "size": 24, "batch_size": 4,
                                                       "loader_workers": 0, "amp": False, **extra}, "test")
    return TrainConfig.from_dict({**knobs, "recipe": "supervised-pretrain", "trial_key": "p", "lr": 0.01,
                                  "sources": [{"dataset": "chexpert", "root": str(root), "options": {}}]})


def test_pretrain_optimiser_weight_decay_head_and_normalisation(tmp_path):
    """optim/builder.py: SGD_AGC(lr, momentum 0.9, weight_decay 1e-4, nesterov=True); models/bit.py: the head a
    fresh ``nn.Conv2d(..., head_size, 1, bias=True)`` (PyTorch's default init); configs: mean = std = 0.5."""
    cfg = _pretrain_cfg(tmp_path)
    run = set_up(cfg, Runtime(trial_dir=str(tmp_path / "run")))
    group = run.opt.param_groups[0]
    assert (group["momentum"], group["weight_decay"], group["nesterov"]) == (0.9, 1e-4, True)
    assert group["lr"] == pytest.approx(0.01 * 4 / 256)  # one worker: no warm-up, lr x batch / 256
    assert run.rd.num_classes == 13  # CheXpert alone: the study's 13 pathologies
    head = run.model.fc
    bound = 1 / math.sqrt(head.in_features)  # kaiming_uniform(a=sqrt(5)) and the bias's U(-1/sqrt(fan_in), ..)
    w, b = head.weight.detach(), head.bias.detach()
    assert w.abs().max() <= bound and b.abs().max() <= bound
    assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.15) and b.abs().min() > 0
    # inputs: (x - 0.5) / 0.5 of the [0, 1] pixels
    image, _, _ = run.rd.val[0]
    raw = data.pixels.record_image(run.rd.val.parts[0].cfg, run.rd.val.parts[0].records[0])
    h, w_ = raw.shape[:2]
    side = min(h, w_)
    square = raw[h // 2 - side // 2:h // 2 - side // 2 + side, w_ // 2 - side // 2:w_ // 2 - side // 2 + side, 0]
    study = cv2.resize(square / 255.0, (24, 24), interpolation=cv2.INTER_AREA)  # XRayResizer(engine='cv2')
    np.testing.assert_allclose(image[0].numpy(), (study - 0.5) / 0.5, atol=2.5 / 255)


def _study_unitwise_norm(x: torch.Tensor) -> torch.Tensor:
    """optim/sgd_agc.py ``unitwise_norm``: the whole vector for 1-D, per row (2-D) or output channel (4-D)."""
    if x.ndim <= 1:
        return torch.sum(x ** 2, dim=0) ** 0.5
    return torch.sum(x ** 2, dim=1 if x.ndim == 2 else [1, 2, 3], keepdim=True) ** 0.5


def test_pretrain_step_is_the_studys_sgd_agc(tmp_path):
    """optim/sgd_agc.py ``SGD_AGC.step`` (clipping 0.01, eps 1e-3, ``output_size`` = the number of classes), as
    optim/builder.py builds it: first every parameter but a 2-D / 4-D one whose first dimension is the number of
    classes is clipped unit-wise to 0.01 x max(||W||, 1e-3), THEN weight decay 1e-4 is added and the Nesterov
    momentum step taken. One step of the run's own optimiser and clipping against that step restated here."""
    from benchxfer.train.loop import clip_gradients

    cfg = _pretrain_cfg(tmp_path)
    run = set_up(cfg, Runtime(trial_dir=str(tmp_path / "run")))
    assert cfg.agc == 0.01
    params = dict(run.model.named_parameters())
    g = torch.Generator().manual_seed(0)
    grads = {n: torch.randn(p.shape, generator=g) * 10.0 ** float(torch.randint(-4, 1, (), generator=g))
             for n, p in params.items()}  # some far beyond 0.01 x the weights, some below: both branches
    start = {n: p.detach().clone() for n, p in params.items()}
    for n, p in params.items():
        p.grad = grads[n].clone()
    clip_gradients(run.clipped, cfg.agc)
    run.opt.step()
    group = run.opt.param_groups[0]
    lr, wd, mom, classes = group["lr"], 1e-4, 0.9, run.rd.num_classes
    clipped_units = 0
    for n, w in start.items():
        grad = grads[n].clone()
        if not (w.ndim in (2, 4) and w.shape[0] == classes):  # the study's output_size rule
            max_norm = torch.max(_study_unitwise_norm(w), torch.tensor(1e-3)) * 0.01
            norm = _study_unitwise_norm(grad)
            grad = torch.where(norm > max_norm, grad * (max_norm / torch.max(norm, torch.tensor(1e-6))), grad)
            clipped_units += int((norm > max_norm).sum())
        else:
            assert n == "fc.weight"
        d_p = grad + wd * w  # weight decay after the clipping
        d_p = d_p + mom * d_p  # first step: the momentum buffer is d_p; Nesterov
        torch.testing.assert_close(params[n].detach(), w - lr * d_p, rtol=1e-5, atol=1e-7, msg=n)
    assert clipped_units > 0


def test_pretrain_loss_is_bce_over_the_batchs_known_cells():
    """pretrain.py compute_loss: ``mask = ~isnan(target); binary_cross_entropy_with_logits(output[mask],
    target[mask])`` -- the mean over the batch's known cells."""
    logits = torch.tensor([[2.0, -1.0, 0.0], [0.5, 3.0, -2.0], [1.0, 1.0, 1.0]])
    target = torch.tensor([[1.0, 0.0, 1.0], [0.0, 1.0, 0.0], [0.0, 0.0, 0.0]])
    known = torch.tensor([[1.0, 1.0, 1.0], [1.0, 0.0, 0.0], [0.0, 1.0, 0.0]])

    def bce(x, y):
        p = 1 / (1 + math.exp(-x))
        return -(y * math.log(p) + (1 - y) * math.log(1 - p))

    cells = [bce(float(logits[i, j]), float(target[i, j])) for i in range(3) for j in range(3) if known[i, j]]
    want = sum(cells) / len(cells)  # 5 known cells, each counted once
    got = LOSSES.get(recipe_config("supervised-pretrain").loss)(logits, target, known)
    assert got.shape == (3,) and got.mean().item() == pytest.approx(want, rel=1e-6)
    assert LOSSES.get("masked-bce")(logits, target, torch.zeros(3, 3)).sum().item() == 0.0


def test_pretrain_augmentation_is_the_studys_shift_scale_rotate():
    """chexpert.py cohen_aug: ShiftScaleRotate(p=1, shift_limit=0.25, rotate_limit=45, scale_limit=0.1) --
    albumentations 0.5.2: angle ~ U(-45, 45), ONE scale ~ U(0.9, 1.1) for both axes
    (``cv2.getRotationMatrix2D(centre, angle, scale)``) about the centre, then a shift of dx W, dy H with dx, dy ~
    U(-0.25, 0.25); linear interpolation; BORDER_REFLECT_101 -- and HorizontalFlip(p=0.5)."""
    size = 224
    pipe = transforms.build("supervised-pretrain", train=True, size=size, mean=(0.0,) * 3, std=(1.0,) * 3)
    # a constant image: reflected borders fill nothing (a zero fill would leave about a quarter black)
    flat = torch.full((1, 256, 256), 200, dtype=torch.uint8)
    for seed in range(20):
        torch.manual_seed(seed)
        out, _ = pipe(flat)
        assert (out * 255).round().eq(200).all()
    # a black / white edge: linear interpolation leaves grey levels along it (nearest neighbour only 0 and 255)
    edge = torch.zeros((1, 256, 256), dtype=torch.uint8)
    edge[:, :, 128:] = 255
    for seed in range(20):
        torch.manual_seed(seed)
        levels = (pipe(edge)[0] * 255).round()
        assert ((levels > 0) & (levels < 255)).sum() > size // 2
    # three blobs (red at the centre, green 24 px to its right, blue 24 px below it): the red one moves by the
    # shift alone, the pairs' vectors turn by the angle and stretch by the scale (a flip mirrors them); one scale
    # for both axes keeps the two vectors equally long and at right angles
    yy, xx = np.mgrid[0:size, 0:size]
    c = size / 2 - 0.5

    def blob(cx):
        return np.exp(-((xx - cx) ** 2 + (yy - c) ** 2) / (2 * 3.0 ** 2))

    rgb = np.zeros((size, size, 3), np.uint8)
    rgb[:, :, 0] = np.round(255 * blob(c))
    rgb[:, :, 1] = np.round(255 * blob(c + 24))
    rgb[:, :, 2] = np.round(255 * np.exp(-((xx - c) ** 2 + (yy - c - 24) ** 2) / (2 * 3.0 ** 2)))
    image = torch.from_numpy(rgb).permute(2, 0, 1)

    def centre(channel, near):
        """The blob nearest ``near`` (a reflected border may show a mirrored copy further out)."""
        labels, n = ndimage.label(channel > 0.2)
        found = [np.asarray(ndimage.center_of_mass(channel * (labels == k))) for k in range(1, n + 1)]
        return min(found, key=lambda p: float(np.hypot(*(p - near))))

    shifts, angles, scales, ratios, corners = [], [], [], [], []
    for seed in range(200):
        torch.manual_seed(seed)
        out = pipe(image)[0].numpy()
        red = centre(out[0], np.asarray([c, c]))
        green = centre(out[1], red)
        shifts.append((red - c) / size)  # (dy, dx) as fractions of the side (a flip keeps |dx|)
        vec = green - red
        angles.append(math.degrees(math.atan2(vec[0], abs(vec[1]))))
        scales.append(float(np.hypot(*vec)) / 24)
        down = centre(out[2], red) - red
        ratios.append(float(np.hypot(*down)) / float(np.hypot(*vec)))
        corners.append(math.degrees(math.acos(abs(float(np.dot(vec, down))) / np.hypot(*vec) / np.hypot(*down))))
    shifts, angles, scales = np.abs(np.asarray(shifts)), np.abs(np.asarray(angles)), np.asarray(scales)
    assert shifts.max() <= 0.25 + 0.01 and shifts.max() > 0.23 and shifts.mean() == pytest.approx(0.125, rel=0.15)
    assert angles.max() <= 45 + 1 and angles.max() > 42 and angles.mean() == pytest.approx(22.5, rel=0.15)
    assert scales.min() >= 0.9 - 0.02 and scales.max() <= 1.1 + 0.02 and scales.max() > 1.08 and scales.min() < 0.92
    # two scales drawn apart in [0.9, 1.1] would make the two lengths differ by up to 20 % (mean about 7 %)
    assert np.abs(np.asarray(ratios) - 1).max() < 0.02 and min(corners) > 89


def test_bit_body_starts_as_the_studys_bit_py():
    """models/bit.py builds ResNetV2 from plain ``nn.Conv2d`` (StdConv2d) and ``nn.GroupNorm`` with PyTorch's
    defaults: every conv weight in U(-1/sqrt(fan_in), 1/sqrt(fan_in)) (kaiming-uniform, a = sqrt(5)), none zeroed,
    every GroupNorm weight 1 and bias 0 -- what a pre-training from scratch starts from."""
    from benchxfer import models

    torch.manual_seed(0)
    model = models.build_classifier("bit-r50x1", 7, recipe_config("supervised-pretrain").head_init)
    convs = [m for m in model.modules() if isinstance(m, torch.nn.Conv2d)]
    norms = [m for m in model.modules() if isinstance(m, torch.nn.GroupNorm)]
    assert len(convs) > 50 and len(norms) > 30
    for conv in convs:
        bound = 1 / math.sqrt(conv.weight[0].numel())
        w = conv.weight.detach()
        assert w.abs().max() <= bound + 1e-7
        assert w.std().item() == pytest.approx(bound / math.sqrt(3), rel=0.2)  # uniform, not zeroed
    for norm in norms:
        assert torch.equal(norm.weight, torch.ones_like(norm.weight)) and not norm.bias.any()
