"""The per-worker training function, in the steps of torchvision's reference ``train.py``.

``train_run(cfg, runtime)`` runs one trial: :func:`set_up` (data, model, optimiser, schedule, stopping),
:func:`restore` (the last epoch checkpoint, if any), then per epoch :func:`train_one_epoch`,
:func:`evaluate` (the whole validation set, gathered over workers) and :func:`end_of_epoch` (schedule,
stopping, checkpoint, MLflow, progress), and at the end :func:`finish` (the weights the recipe's ``select``
names -- the best validation epoch's, or the last step's -- on the test set, the finish hook,
``result.json``). Without a validation set the epoch's train loss is what the schedule and stopping rule
watch, and the last step is tested. Ray Train's TorchTrainer calls it through
:func:`benchxfer.train.entry.train_loop_per_worker` on each worker (DDP); a 1-worker trial may run it inside its Tune trial;
``benchxfer train`` runs it in-process. Every file of the trial's folder goes through
:class:`benchxfer.trialdir.TrialDir`.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import platform
import random
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from benchxfer import models, zoo
from benchxfer.recipes import TrainConfig
from benchxfer.recipes.config import micro_images
from benchxfer.recipes.parts import OPTIMIZERS, STOPPING, loss_for, mixup, mixup_lambda
from benchxfer.recipes.schedules import ScheduleInput, bit_boundaries, build_schedule, current_lr
from benchxfer.tasks import Task, get_task
from benchxfer.tracking import TrialRun
from benchxfer.train import metrics as M
from benchxfer.train.checkpoint import CheckpointStore, rng_state, set_rng_state
from benchxfer.train.data_setup import RunData, TrainStream, build_data, eval_loader, steps_per_epoch, train_loader
from benchxfer.train.sampling import study_micro_batch
from benchxfer.train.session import SESSIONS, Runtime, Session
from benchxfer.trialdir import Failure, Progress, TrialDir, TrialFailed, TrialResult, write_atomically

log = logging.getLogger("benchxfer")


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


def _unwrap(model: nn.Module) -> nn.Module:
    return model.module if hasattr(model, "module") else model


def _gather(obj: Any, world: int) -> list[Any]:
    if world == 1:
        return [obj]
    out: list[Any] = [None] * world
    dist.all_gather_object(out, obj)
    return out


def _mean_over_workers(total: float, count: int, world: int, device: torch.device) -> float:
    if world > 1:
        t = torch.tensor([total, float(count)], dtype=torch.float64, device=device)
        dist.all_reduce(t)
        total, count = float(t[0]), int(t[1])
    return total / max(count, 1)


# --- evaluation ------------------------------------------------------------------------------------

@torch.no_grad()
def evaluate(model: nn.Module, loader, rd: RunData, loss_fn, sess: Session, autocast, names) -> dict[str, float]:
    """Loss and metrics over the whole set: each worker evaluates its share, the small per-sample records
    are gathered, and every worker computes the metrics on all of them in the original order."""
    task = get_task(rd.task)
    model.eval()
    idx, losses, scores, targets, known, inter, psum, tsum = [], [], [], [], [], [], [], []
    for batch in loader:
        i, x, y = batch[0], batch[1].to(sess.device, non_blocking=True), batch[2].to(sess.device, non_blocking=True)
        mask = batch[3].to(sess.device, non_blocking=True) if len(batch) > 3 else None  # known labels (merged sources)
        crops = x.dim() == 5  # TenCrop: B x 10 x C x H x W, the ten predictions averaged
        if crops:
            b, n = x.shape[:2]
            x = x.flatten(0, 1)
        with autocast():
            logits = model(x).float()
        if crops:
            logits = task.logits_of(task.probs(logits.view(b, n, *logits.shape[1:])).mean(1))
        losses.append(loss_fn(logits, y, mask).cpu())
        if mask is not None:
            known.append(mask.cpu().float())
        idx.append(i)
        if task.dense:
            pred = (logits.squeeze(1) > 0).float()
            tgt = y.float().reshape(pred.shape)
            inter.append((pred * tgt).flatten(1).sum(1).cpu())
            psum.append(pred.flatten(1).sum(1).cpu())
            tsum.append(tgt.flatten(1).sum(1).cpu())
        else:
            scores.append(task.probs(logits).cpu())
            targets.append(y.cpu().float() if task.target == "multi-hot" else y.cpu().reshape(-1).float())

    def cat(xs):
        return torch.cat(xs).numpy() if xs else np.zeros(0)

    mine = {"idx": cat(idx), "loss": cat(losses), "scores": cat(scores), "targets": cat(targets),
            "known": cat(known), "inter": cat(inter), "psum": cat(psum), "tsum": cat(tsum)}
    mine = {k: v for k, v in mine.items() if k in ("idx", "loss") or len(v)}
    parts = _gather(mine, sess.world)
    order = np.argsort(np.concatenate([p["idx"] for p in parts]), kind="stable")
    rec = {k: np.concatenate([p[k] for p in parts if k in p])[order] for k in mine if k != "idx"}
    if "scores" in rec:
        rec["scores"] = task.scores(rec["scores"])
    if rd.auroc_columns is not None:
        rec["columns"] = rd.auroc_columns
    out = {"loss": float(rec["loss"].mean())}
    out.update(M.compute(names, rec))
    return out


# --- adaptive gradient clipping ------------------------------------------------------------------

def clipped_parameters(model: nn.Module, outputs: int) -> list[nn.Parameter]:
    """What AGC clips, by the second study's rule (transfer_learning/optim/sgd_agc.py, ``output_size`` = the
    number of classes): every parameter but a weight (2-D or 4-D) whose first dimension is the head's
    ``outputs`` -- the head's weight is exempt, its bias is clipped."""
    return [p for p in _unwrap(model).parameters() if not (p.dim() in (2, 4) and p.shape[0] == outputs)]


def clip_gradients(params: list[nn.Parameter], clip: float) -> None:
    """timm's adaptive gradient clipping (unit-wise, eps 1e-3) at ratio ``clip``."""
    from timm.utils.agc import adaptive_clip_grad

    adaptive_clip_grad(params, clip_factor=clip, eps=1e-3)


# --- the run, in steps -------------------------------------------------------------------------------

@dataclass
class Run:
    """Everything one worker's run holds: what set-up made, and the state that a checkpoint restores."""

    cfg: TrainConfig
    runtime: Runtime
    sess: Session
    folder: TrialDir
    tlog: TrialRun  # the trial's MLflow run (rank 0's; the others' does nothing)
    rd: RunData
    task: Task
    model: nn.Module
    loss_fn: Callable
    opt: torch.optim.Optimizer
    clipped: list[nn.Parameter]  # what AGC clips: every parameter but the head's weight
    sched: Any
    stopper: Any
    scaler: torch.amp.GradScaler
    autocast: Callable[[], Any]
    names: tuple[str, ...]
    epochs: int
    max_steps: int
    steps_per_epoch: int
    channels_last: bool
    store: CheckpointStore
    started: float
    saved_at: float = field(default_factory=time.monotonic)  # when the last checkpoint was written (or the start)
    logged_at: float = field(default_factory=time.monotonic)  # when MLflow last got the epochs' metrics
    checkpoint_epoch: int = -1  # the last epoch whose checkpoint is written
    # restored from a checkpoint, advanced every epoch
    next_epoch: int = 0
    step: int = 0
    best_epoch: int = -1
    best_state: dict[str, torch.Tensor] | None = None
    history: list[dict[str, float]] = field(default_factory=list)
    epoch: int = -1  # the epoch the loop last reached

    @property
    def cuda(self) -> bool:
        return self.sess.device.type == "cuda"

    def done(self) -> bool:
        return self.stopper.should_stop or bool(self.max_steps and self.step >= self.max_steps)


def set_up(cfg: TrainConfig, runtime: Runtime) -> Run:
    """Session, seeds, data, model (head from the trial's seed, then the init's backbone), optimiser, schedule,
    stopping rule and loss. A trial that failed for a reason a retry cannot fix fails again here."""
    sess = SESSIONS[runtime.session]()
    folder = TrialDir(runtime.trial_dir)
    tlog = TrialRun(runtime.tracking_uri, runtime.run_id, folder.path) if sess.is_main else TrialRun(None, None)
    if runtime.threads:
        torch.set_num_threads(int(runtime.threads))
    started = time.time()
    cuda = sess.device.type == "cuda"

    seed_everything(cfg.seed)
    rd = build_data(cfg)
    task = get_task(rd.task)
    model = models.build_model(cfg.arch, rd.task, rd.num_classes, cfg.head_init)  # head from the trial's seed
    if cfg.init != "scratch":
        _, path = zoo.resolve_init(cfg.init)
        zoo.apply_backbone(model, zoo.load_backbone(path, arch=cfg.arch))
    clipped = clipped_parameters(model, task.outputs(rd.num_classes))
    use_cl = cuda and cfg.channels_last
    model = models.channels_last(model.to(sess.device), use_cl)
    if sess.world > 1:
        device_ids = [sess.device.index] if cuda else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    loss_fn = loss_for(task.loss if cfg.loss == "auto" else cfg.loss, rd.task)
    lr = cfg.lr * (cfg.batch_size / cfg.base_batch if cfg.base_batch > 0 else 1.0)
    opt = OPTIMIZERS.get(cfg.optimizer)(model.parameters(), lr=lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
    spe = steps_per_epoch(len(rd.train), cfg, sess.world)
    max_steps = cfg.max_steps or (bit_boundaries(len(rd.train))[-1] if cfg.schedule == "bit-hyperrule" else 0)
    epochs = min(cfg.epochs, math.ceil(max_steps / spe)) if max_steps else cfg.epochs
    sched = build_schedule(cfg.schedule, opt, ScheduleInput(
        epochs=epochs, steps_per_epoch=spe, n_train=len(rd.train), warmup_epochs=cfg.warmup_epochs,
        plateau_factor=cfg.plateau_factor, plateau_patience=cfg.plateau_patience,
        plateau_threshold=cfg.plateau_threshold, workers=sess.world))
    stopper = STOPPING.get(cfg.stopping)(cfg.patience)
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda and cfg.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def autocast():
        return torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    names = rd.metrics if rd.metric in rd.metrics else (rd.metric, *rd.metrics)
    failure = folder.failure()
    if failure is not None and failure.final:
        raise TrialFailed(failure.reason)
    return Run(cfg, runtime, sess, folder, tlog, rd, task, model, loss_fn, opt, clipped, sched, stopper, scaler, autocast,
               names, epochs, max_steps, spe, use_cl, CheckpointStore(folder.checkpoints), started)


def restore(run: Run) -> None:
    """Continue from the newest readable epoch checkpoint (a damaged one is noted on the run and skipped)."""
    state, notes = run.store.load_latest()
    for note in notes:
        run.tlog.note_checkpoint(note)
    if state is None:
        return
    _unwrap(run.model).load_state_dict(state["model"])
    run.opt.load_state_dict(state["optimizer"])
    run.sched.scheduler.load_state_dict(state["scheduler"])
    run.scaler.load_state_dict(state["scaler"])
    run.stopper.load_state_dict(state["stopping"])
    run.next_epoch, run.step, run.best_epoch = state["epoch"] + 1, state["step"], state["best_epoch"]
    run.checkpoint_epoch = state["epoch"]
    run.best_state, run.history = state["best_model"], json.loads(state["history"])
    set_rng_state(state["rng"])
    log.info("%s: continuing at epoch %d from its checkpoint", run.cfg.trial_key, run.next_epoch)


def accumulate_gradients(model: nn.Module, loss_fn: Callable, x: torch.Tensor, y: torch.Tensor,
                         mask: torch.Tensor | None, micro_batch: int, autocast: Callable[[], Any] = contextlib.nullcontext,
                         scaler: torch.amp.GradScaler | None = None, sizes: list[int] | None = None) -> torch.Tensor:
    """Forward and backward of one worker's batch, in micro-batches of ``micro_batch`` images (0: the whole batch
    at once); returns the mean of the pieces' mean losses. Each piece's mean loss is divided by the number of
    pieces, the studies' rule (the second study's fine-tuning: ``loss / batch_split``; its pre-training:
    ``loss.div_(ceil(len(data) / local_batch_size))``, a last piece of fewer images weighing like a whole one).
    Where the pieces are equal and the net has no BatchNorm (``recipes.parts.check_micro_batch`` refuses a
    BatchNorm net and a whole-batch loss), that is the gradient of the batch's mean per-sample loss: exact for
    BiT's GroupNorm with cross-entropy or BCE; masked BCE averages each piece's own known cells, as the study's
    pre-training did. ``sizes``: the pieces' sizes as the sampler cut them (the study's micro-batches of shuffled
    passes, the last of a pass partial), instead of ``micro_batch``. Under DDP the gradients are averaged over
    workers once, in the last micro-batch's backward (``no_sync`` before it)."""
    n = len(x)
    if sizes is None:
        size = micro_images(micro_batch, n)
        sizes = [min(size, n - a) for a in range(0, n, size)]
    starts = [sum(sizes[:k]) for k in range(len(sizes))]
    parts = [(x[a:a + k], y[a:a + k], None if mask is None else mask[a:a + k]) for a, k in zip(starts, sizes)]
    total = torch.zeros((), device=x.device)
    for k, (xm, ym, mm) in enumerate(parts):
        last = k == len(parts) - 1
        with contextlib.nullcontext() if last or not hasattr(model, "no_sync") else model.no_sync():
            with autocast():
                loss = loss_fn(model(xm).float(), ym, mm).mean()
            if len(parts) > 1:
                loss = loss / len(parts)
            (scaler.scale(loss) if scaler is not None else loss).backward()
        total += loss.detach()
    return total


def train_one_epoch(run: Run, stream: TrainStream, epoch: int) -> float:
    """One pass over this worker's shard (the epoch's batches of the run's one loader stream); returns the
    mean training loss over all workers. A loss that is not finite fails the trial for good (``failed.json``
    with ``retryable: false``)."""
    cfg, sess, rd = run.cfg, run.sess, run.rd
    if sess.is_main:
        run.folder.log_epoch_start(epoch)
    run.model.train()
    torch.manual_seed(cfg.seed * 100_003 + epoch * 1009 + sess.rank)  # the step's own RNG (MixUp) this epoch
    total, count, seen = torch.zeros((), device=sess.device), 0, []  # the loss summed on the device: no sync
    pieces = stream.pieces(epoch)  # the study's micro-batches of this epoch's one batch, where the sampler cuts them
    for batch in stream.epoch(epoch):
        if run.max_steps and run.step >= run.max_steps:
            break
        i, x, y = batch[0], batch[1].to(sess.device, non_blocking=True), batch[2].to(sess.device, non_blocking=True)
        mask = batch[3].to(sess.device, non_blocking=True) if len(batch) > 3 else None
        if run.channels_last:
            x = x.contiguous(memory_format=torch.channels_last)
        if rd.mixup > 0 and not run.task.dense:  # pairs within the study's micro-batches (full_batches runs)
            x, y = mixup(x, y, mixup_lambda(rd.mixup, cfg.seed, run.step), run.task.outputs(rd.num_classes),
                         group=pieces or (study_micro_batch(cfg.dataset) if cfg.full_batches else 0))
        run.opt.zero_grad(set_to_none=True)
        loss = accumulate_gradients(run.model, run.loss_fn, x, y, mask, cfg.micro_batch, run.autocast, run.scaler,
                                    sizes=pieces)
        if cfg.agc > 0:
            run.scaler.unscale_(run.opt)
            clip_gradients(run.clipped, cfg.agc)
        run.scaler.step(run.opt)
        run.scaler.update()
        if run.sched.per_step:
            run.sched.scheduler.step()
        run.step += 1
        total += loss.detach().float() * len(i)
        count += len(i)
        if run.runtime.record_shards:
            seen += i.tolist()
    train_loss = _mean_over_workers(float(total), count, sess.world, sess.device)
    if run.runtime.record_shards:
        run.folder.write_shard(epoch, sess.rank, seen)
    if not math.isfinite(train_loss):
        reason = f"loss became {train_loss} at epoch {epoch}"
        if sess.is_main:
            run.folder.write_failure(Failure(reason, retryable=False, epoch=epoch))
            run.tlog.mark_failed(reason, retry_seconds=10)
        raise TrialFailed(reason)
    return train_loss


def end_of_epoch(run: Run, epoch: int, train_loss: float, val: dict[str, float]) -> None:
    """Step the schedule and the stopping rule, keep the best weights, and on rank 0 save the checkpoint when
    it is due (:func:`checkpoint_due`), send the epochs' metrics to MLflow (with each checkpoint, and at least
    every ``METRICS_EVERY_S``) and write the progress; report to Ray."""
    lr_now = current_lr(run.opt)
    watched = val["loss"] if val else train_loss  # no validation set: the train loss
    if not run.sched.per_step:
        run.sched.scheduler.step(watched) if run.sched.on_metric else run.sched.scheduler.step()
    if run.stopper.update(watched):
        run.best_epoch = epoch
        if run.cfg.select == "best-val" and val:
            run.best_state = {k: v.detach().cpu().clone() for k, v in _unwrap(run.model).state_dict().items()}
    row = {"epoch": epoch, "train_loss": train_loss, "lr": lr_now,
           **{f"val_{k}": v for k, v in val.items()}}
    run.history.append(row)
    if run.sess.is_main and checkpoint_due(run, epoch):
        run.store.save(epoch, {
            "model": _unwrap(run.model).state_dict(), "optimizer": run.opt.state_dict(),
            "scheduler": run.sched.scheduler.state_dict(), "scaler": run.scaler.state_dict(),
            "stopping": run.stopper.state_dict(), "epoch": epoch, "step": run.step, "best_epoch": run.best_epoch,
            "best_model": run.best_state, "history": json.dumps(run.history), "rng": rng_state(),
            "config": json.dumps(run.cfg.to_dict(), default=str),
        })
        run.saved_at, run.checkpoint_epoch = time.monotonic(), epoch
    if run.sess.is_main:
        send = (run.runtime.metrics_each_epoch or run.checkpoint_epoch == epoch
                or time.monotonic() - run.logged_at >= METRICS_EVERY_S)
        run.tlog.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch, flush=send)
        if send:
            run.logged_at = time.monotonic()
        best = run.history[run.best_epoch] if run.best_epoch >= 0 else None
        run.folder.write_progress(Progress(epoch, run.best_epoch, run.epochs, best, run.checkpoint_epoch))
    run.sess.report(row | _best_val(run) | {"done": False})


METRICS_EVERY_S = 30.0  # an epoch's metrics reach MLflow within this long (and with every checkpoint)


def checkpoint_due(run: Run, epoch: int) -> bool:
    """Save at the run's last epoch (the schedule's end, a stop, ``max_steps``) and whenever
    ``checkpoint_every_s`` has passed since the last save (0: every epoch). A failure redoes at most the epochs
    since the last save; a few-shot run of one-step epochs no longer writes a checkpoint per step."""
    last = epoch >= run.epochs - 1 or run.done()
    return last or time.monotonic() - run.saved_at >= run.cfg.checkpoint_every_s


def finish(run: Run) -> TrialResult:
    """Test the selected weights (the best validation epoch's, or the last step's), run the finish hook, and on
    rank 0 log the end and write ``result.json``."""
    cfg, sess, rd = run.cfg, run.sess, run.rd
    selected = "best-val" if run.best_state is not None else "last"
    if run.best_state is not None:
        _unwrap(run.model).load_state_dict(run.best_state)
    test: dict[str, float] = {}
    if rd.test is not None:
        tl = eval_loader(rd.test, cfg, sess.rank, sess.world, run.cuda)
        scores = evaluate(run.model, tl, rd, run.loss_fn, sess, run.autocast, run.names)
        test = {k: v for k, v in scores.items() if k != "loss"}
    wall = time.time() - run.started
    accel = sess.world * (wall / 3600.0) if run.cuda else 0.0
    result = TrialResult(
        sweep=cfg.sweep, trial_key=cfg.trial_key, recipe=cfg.recipe, init=cfg.init,
        dataset=cfg.dataset or "+".join(s["dataset"] for s in cfg.sources), task=rd.task, shot=cfg.shot,
        lr=cfg.lr, seed=cfg.seed, metric=rd.metric, value=test.get(rd.metric, float("nan")), test=test,
        best_epoch=run.best_epoch, epochs_run=len(run.history),
        epochs_started=len(run.folder.epochs_started()) if sess.is_main else None,
        wall_seconds=wall, accelerator_hours=accel, mlflow_run_id=run.runtime.run_id,
        best_val_loss=run.stopper.best if rd.val is not None and math.isfinite(run.stopper.best) else None,
        selected=selected, last_step=run.step if selected == "last" else None, environment=environment(sess),
    )
    if sess.is_main:
        keep_weights(run, result)
        if run.runtime.finish is not None:
            result = run.runtime.finish(_unwrap(run.model), cfg, result)
        run.tlog.log_metrics({f"test_{k}": v for k, v in test.items()} | {
            "best_epoch": run.best_epoch, "epochs_run": len(run.history), "wall_seconds": wall,
            "accelerator_hours": accel}, step=max(run.epoch, 0))
        run.tlog.attach(_curves_csv(run.history), "learning_curves.csv")
        run.tlog.attach(json.dumps(cfg.to_dict(), indent=1, default=str), "trial_config.json")
        run.tlog.mark_finished(result.environment)
        run.folder.write_result(result)
        run.tlog.close("FINISHED")
        run.folder.tidy(run.runtime.keep)  # the result is recorded: the training checkpoint goes unless kept
    sess.report({f"test_{k}": v for k, v in test.items()} | {"done": True, "epoch": run.epoch} | _best_val(run))
    return result


def keep_weights(run: Run, result: TrialResult) -> None:
    """The tested weights as the sweep's ``keep`` says, linked from the trial's MLflow run: ``selected`` writes
    them into the trial's folder (:func:`save_selected`; the link is their path), ``checkpoint`` keeps the training
    checkpoint there and uploads the tested weights alone (``checkpoint/best_model.pt``), ``none`` keeps none. The
    link names their epoch when they are the best validation epoch's."""
    model, epoch = _unwrap(run.model), run.best_epoch if result.selected == "best-val" else None
    if run.runtime.keep == "selected":
        save_selected(model, run.folder.selected_weights, run.cfg, result)
        run.tlog.link_weights(run.folder.selected_weights, epoch)
    elif run.runtime.keep == "checkpoint" and run.tlog.enabled:
        with tempfile.TemporaryDirectory(prefix="benchxfer-best-") as tmp:
            best = Path(tmp) / "best_model.pt"
            torch.save({k: v.detach().cpu() for k, v in model.state_dict().items()}, best)
            run.tlog.link_weights(best, epoch, upload=True)


def save_selected(model: nn.Module, path, cfg: TrainConfig, result: TrialResult) -> None:
    """The tested weights, alone, as safetensors (written atomically): the model's state dict in its own names
    (``benchxfer zoo import`` reads a classifier's as the canonical format, its head dropped), with the arch,
    the trial and which weights they are in the file's metadata."""
    from safetensors.torch import save_file

    state = {k: v.detach().cpu().contiguous() for k, v in model.state_dict().items()}
    meta = {"arch": cfg.arch, "trial_key": cfg.trial_key, "selected": result.selected,
            "best_epoch": str(result.best_epoch), "format": "benchxfer"}
    write_atomically(path, lambda tmp: save_file(state, tmp, metadata=meta))


def train_run(cfg: TrainConfig, runtime: Runtime) -> TrialResult:
    """Train, validate and test one trial (or continue it from its last checkpoint); returns its result."""
    run = set_up(cfg, runtime)
    restore(run)
    sess = run.sess
    stream = train_loader(run.rd.train, cfg, sess.rank, sess.world, run.cuda, run.rd.balance)
    val_dl = eval_loader(run.rd.val, cfg, sess.rank, sess.world, run.cuda, persistent=True) if run.rd.val is not None else None
    run.epoch = run.next_epoch - 1
    if not run.done():
        stream.start(run.next_epoch, run.epochs)
    try:
        for epoch in range(run.next_epoch, run.epochs):
            run.epoch = epoch
            if run.done():
                break
            train_loss = train_one_epoch(run, stream, epoch)
            val = evaluate(run.model, val_dl, run.rd, run.loss_fn, sess, run.autocast, run.names) if val_dl else {}
            end_of_epoch(run, epoch, train_loss, val)
    finally:
        stream.close()
        del val_dl
    return finish(run)


def _best_val(run: Run) -> dict[str, float]:
    """The lr search's objective, where a validation set exists."""
    return {"best_val_loss": run.stopper.best} if run.rd.val is not None else {}


def environment(sess: Session) -> dict[str, Any]:
    """What makes runs on different machines differ: torch threads and version, the CPU and its kernels."""
    cpu = platform.processor() or platform.machine()
    with contextlib.suppress(OSError):
        with open("/proc/cpuinfo") as f:
            cpu = next((ln.split(":", 1)[1].strip() for ln in f if ln.startswith("model name")), cpu)
    env = {"threads": torch.get_num_threads(), "cpu_capability": torch.backends.cpu.get_cpu_capability(),
           "cpu_model": cpu, "torch": torch.__version__}
    if sess.device.type == "cuda":
        env["gpu"] = torch.cuda.get_device_name(sess.device)
    return env


def _curves_csv(history: list[dict]) -> str:
    if not history:
        return ""
    cols = list(history[0])
    return "\n".join([",".join(cols)] + [",".join(f"{r.get(c, '')}" for c in cols) for r in history]) + "\n"
