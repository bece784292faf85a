"""The per-worker training function: one straight-line ``train_run`` for every recipe.

Ray Train's TorchTrainer runs it on each worker (DDP); a 1-worker trial may run it directly inside
its Tune trial; ``benchxfer train`` runs it in-process. Per epoch it trains, evaluates the whole
validation set (gathered over workers), steps the schedule and the stopping rule, and on rank 0 saves a
checkpoint and logs to MLflow. At the end the best epoch's weights are tested. Rank 0 writes
``result.json`` in the trial's folder: the record that makes a finished trial final.
"""

from __future__ import annotations

import contextlib
import json
import logging
import math
import os
import random
import time
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.distributed as dist
from torch import nn

from benchxfer import models, zoo
from benchxfer.recipes import TrainConfig
from benchxfer.recipes.parts import OPTIMIZERS, STOPPING, loss_for, mixup
from benchxfer.recipes.schedules import ScheduleInput, bit_boundaries, build_schedule, current_lr
from benchxfer.tracking import RunLogger
from benchxfer.train import metrics as M
from benchxfer.train.checkpoint import CheckpointStore, rng_state, set_rng_state
from benchxfer.train.data_setup import RunData, build_data, eval_loader, steps_per_epoch, train_loader
from benchxfer.train.session import SESSIONS, Session

log = logging.getLogger("benchxfer")

RESULT, FAILED, PROGRESS, EPOCH_LOG = "result.json", "failed.json", "progress.json", "epochs.jsonl"


class TrialFailed(RuntimeError):
    """A trial that must not be retried as it is (its loss became NaN, say)."""


def write_json(path: Path, obj: Any) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_suffix(".tmp")
    tmp.write_text(json.dumps(obj, indent=1, default=str))
    os.replace(tmp, path)


def log_epoch_start(trial_dir: Path, epoch: int) -> None:
    """Append one line per epoch started (with the process that runs it): the record of work done, redone
    after a failure, and the pid that fault-injection tests kill."""
    trial_dir.mkdir(parents=True, exist_ok=True)
    with open(trial_dir / EPOCH_LOG, "a") as f:
        f.write(json.dumps({"epoch": epoch, "pid": os.getpid(), "time": time.time()}) + "\n")


def epochs_started(trial_dir: Path) -> list[int]:
    """The epochs started in this trial's folder, in order, counting those started again after a failure."""
    path = trial_dir / EPOCH_LOG
    if not path.exists():
        return []
    return [json.loads(line)["epoch"] for line in path.read_text().splitlines() if line.strip()]


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
    model.eval()
    idx, losses, scores, targets, known, inter, psum, tsum = [], [], [], [], [], [], [], []
    for batch in loader:
        i, x, y = batch[0], batch[1].to(sess.device, non_blocking=True), batch[2].to(sess.device)
        mask = batch[3].to(sess.device) if len(batch) > 3 else None  # known labels (merged sources)
        crops = x.dim() == 5  # TenCrop: B x 10 x C x H x W, the ten predictions averaged
        if crops:
            b, n = x.shape[:2]
            x = x.flatten(0, 1)
        with autocast():
            logits = model(x).float()
        if crops:
            logits = logits.view(b, n, *logits.shape[1:])
            prob = torch.sigmoid(logits).mean(1) if rd.task != "multiclass" else logits.softmax(-1).mean(1)
            logits = torch.logit(prob.clamp(1e-6, 1 - 1e-6)) if rd.task != "multiclass" else prob.log()
        losses.append(loss_fn(logits, y, mask).cpu())
        if mask is not None:
            known.append(mask.cpu().float())
        idx.append(i)
        if rd.task == "segmentation":
            pred = (logits.squeeze(1) > 0).float()
            tgt = y.float().reshape(pred.shape)
            inter.append((pred * tgt).flatten(1).sum(1).cpu())
            psum.append(pred.flatten(1).sum(1).cpu())
            tsum.append(tgt.flatten(1).sum(1).cpu())
        else:
            s = logits.softmax(-1) if rd.task == "multiclass" else torch.sigmoid(logits)
            scores.append(s.cpu())
            targets.append(y.cpu().float() if rd.task == "multilabel" else y.cpu().reshape(-1).float())

    def cat(xs):
        return torch.cat(xs).numpy() if xs else np.zeros(0)

    mine = {"idx": cat(idx), "loss": cat(losses), "scores": cat(scores), "targets": cat(targets),
            "known": cat(known), "inter": cat(inter), "psum": cat(psum), "tsum": cat(tsum)}
    mine = {k: v for k, v in mine.items() if k in ("idx", "loss") or len(v)}
    parts = _gather(mine, sess.world)
    order = np.argsort(np.concatenate([p["idx"] for p in parts]), kind="stable")
    rec = {k: np.concatenate([p[k] for p in parts if k in p])[order] for k in mine if k != "idx"}
    if rd.task == "binary":
        rec["scores"] = rec["scores"].reshape(-1)
    if rd.auroc_columns is not None:
        rec["columns"] = rd.auroc_columns
    out = {"loss": float(rec["loss"].mean())}
    out.update(M.compute(names, rec))
    return out


# --- the run ---------------------------------------------------------------------------------------

def train_run(config: dict[str, Any]) -> dict[str, Any]:
    """Train, validate and test one trial. ``config`` is a TrainConfig dict plus a ``_runtime`` dict
    (session kind, MLflow URI and run id, trial folder); returns the result record (rank 0)."""
    config = dict(config)
    rt = config.pop("_runtime", {})
    cfg = TrainConfig.from_dict(config)
    sess = SESSIONS[rt.get("session", "local")]()
    trial_dir = Path(rt["trial_dir"])
    tlog = RunLogger(rt.get("tracking_uri"), rt.get("run_id"), trial_dir) if sess.is_main else RunLogger(None, None)
    threads = rt.get("threads")
    if threads:
        torch.set_num_threads(int(threads))
    started = time.time()
    cuda = sess.device.type == "cuda"

    seed_everything(cfg.seed)
    rd = build_data(cfg)
    arch_task = "multilabel" if cfg.sources else rd.task
    model = models.build_model(cfg.arch, arch_task, rd.num_classes)  # head init from the trial's seed
    if cfg.init != "scratch":
        _, path = zoo.resolve_init(cfg.init)
        zoo.apply_backbone(model, zoo.load_backbone(path, arch=cfg.arch))
    use_cl = cuda and cfg.channels_last
    model = models.channels_last(model.to(sess.device), use_cl)
    if sess.world > 1:
        device_ids = [sess.device.index] if cuda else None
        model = nn.parallel.DistributedDataParallel(model, device_ids=device_ids)

    loss_fn = loss_for(cfg.loss, arch_task)
    lr = cfg.lr * (cfg.batch_size / cfg.base_batch if cfg.base_batch > 0 else 1.0)
    opt = OPTIMIZERS.get(cfg.optimizer)(model.parameters(), lr=lr, momentum=cfg.momentum,
                                        weight_decay=cfg.weight_decay)
    spe = steps_per_epoch(len(rd.train), cfg, sess.world)
    max_steps = cfg.max_steps or (bit_boundaries(len(rd.train))[-1] if cfg.schedule == "bit-hyperrule" else 0)
    epochs = min(cfg.epochs, math.ceil(max_steps / spe)) if max_steps else cfg.epochs
    sched = build_schedule(cfg.schedule, opt, ScheduleInput(
        epochs=epochs, steps_per_epoch=spe, n_train=len(rd.train), warmup_epochs=cfg.warmup_epochs,
        plateau_factor=cfg.plateau_factor, plateau_patience=cfg.plateau_patience,
        plateau_threshold=cfg.plateau_threshold))
    stopper = STOPPING.get(cfg.stopping)(cfg.patience)
    amp_dtype = (torch.bfloat16 if torch.cuda.is_bf16_supported() else torch.float16) if cuda and cfg.amp else None
    scaler = torch.amp.GradScaler("cuda", enabled=amp_dtype == torch.float16)

    def autocast():
        return torch.autocast("cuda", dtype=amp_dtype) if amp_dtype else contextlib.nullcontext()

    names = rd.metrics if rd.metric in rd.metrics else (rd.metric, *rd.metrics)
    store = CheckpointStore(trial_dir / "checkpoints")
    start_epoch, step, best_epoch, best_state, history = 0, 0, -1, None, []
    _refuse_known_failure(trial_dir)
    state, notes = store.load_latest()
    for note in notes:
        tlog.set_tags({"benchxfer.checkpoint_note": note})
    if state is not None:
        _unwrap(model).load_state_dict(state["model"])
        opt.load_state_dict(state["optimizer"])
        sched.scheduler.load_state_dict(state["scheduler"])
        scaler.load_state_dict(state["scaler"])
        stopper.load_state_dict(state["stopping"])
        start_epoch, step, best_epoch = state["epoch"] + 1, state["step"], state["best_epoch"]
        best_state, history = state["best_model"], json.loads(state["history"])
        set_rng_state(state["rng"])
        log.info("%s: continuing at epoch %d from its checkpoint", cfg.trial_key, start_epoch)
    tloader, sampler = train_loader(rd.train, cfg, sess.rank, sess.world, cuda)
    vloader = eval_loader(rd.val, cfg, sess.rank, sess.world, cuda)
    shard_log = rt.get("record_shards")

    epoch = start_epoch - 1
    for epoch in range(start_epoch, epochs):
        if stopper.should_stop or (max_steps and step >= max_steps):
            break
        if sess.is_main:
            log_epoch_start(trial_dir, epoch)
        model.train()
        sampler.set_epoch(epoch)
        torch.manual_seed(cfg.seed * 100_003 + epoch * 1009 + sess.rank)  # augmentation RNG of this epoch
        tloader.generator.manual_seed(cfg.seed * 100_003 + epoch)
        total, count, seen = 0.0, 0, []
        for b, batch in enumerate(tloader):
            if b >= spe or (max_steps and step >= max_steps):
                break
            i, x, y = batch[0], batch[1].to(sess.device, non_blocking=True), batch[2].to(sess.device)
            mask = batch[3].to(sess.device) if len(batch) > 3 else None
            if use_cl:
                x = x.contiguous(memory_format=torch.channels_last)
            if rd.mixup > 0 and rd.task != "segmentation":
                x, y = mixup(x, y, rd.mixup, rd.num_classes)
            with autocast():
                loss = loss_fn(model(x).float(), y, mask).mean()
            opt.zero_grad(set_to_none=True)
            scaler.scale(loss).backward()
            if cfg.agc > 0:
                from timm.utils.agc import adaptive_clip_grad

                scaler.unscale_(opt)
                adaptive_clip_grad(model.parameters(), clip_factor=cfg.agc)
            scaler.step(opt)
            scaler.update()
            if sched.per_step:
                sched.scheduler.step()
            step += 1
            total += float(loss.detach()) * len(i)
            count += len(i)
            if shard_log:
                seen += i.tolist()
        train_loss = _mean_over_workers(total, count, sess.world, sess.device)
        if shard_log:
            write_json(trial_dir / "shards" / f"epoch{epoch}_rank{sess.rank}.json", seen)
        if not math.isfinite(train_loss):
            reason = f"loss became {train_loss} at epoch {epoch}"
            if sess.is_main:
                write_json(trial_dir / FAILED, {"reason": reason, "retryable": False, "epoch": epoch})
                tlog.set_tags({"benchxfer.status": "failed", "benchxfer.error": reason})
                tlog.close("FAILED", retry_seconds=10)
            raise TrialFailed(reason)

        val = evaluate(model, vloader, rd, loss_fn, sess, autocast, names)
        lr_now = current_lr(opt)
        if not sched.per_step:
            sched.scheduler.step(val["loss"]) if sched.on_metric else sched.scheduler.step()
        if stopper.update(val["loss"]):
            best_epoch = epoch
            best_state = {k: v.detach().cpu().clone() for k, v in _unwrap(model).state_dict().items()}
        row = {"epoch": epoch, "train_loss": train_loss, "val_loss": val["loss"], "lr": lr_now,
               **{f"val_{k}": v for k, v in val.items() if k != "loss"}}
        history.append(row)
        if sess.is_main:
            store.save(epoch, {
                "model": _unwrap(model).state_dict(), "optimizer": opt.state_dict(),
                "scheduler": sched.scheduler.state_dict(), "scaler": scaler.state_dict(),
                "stopping": stopper.state_dict(), "epoch": epoch, "step": step, "best_epoch": best_epoch,
                "best_model": best_state, "history": json.dumps(history), "rng": rng_state(),
                "config": json.dumps(cfg.to_dict(), default=str),
            })
            tlog.log_metrics({k: v for k, v in row.items() if k != "epoch"}, step=epoch)
            write_json(trial_dir / PROGRESS, {"epoch": epoch, "best_epoch": best_epoch, "epochs_max": epochs,
                                              "best": history[best_epoch] if best_epoch >= 0 else None})
        sess.report(row | {"best_val_loss": stopper.best, "done": False})

    # --- test the best epoch's weights ---------------------------------------------------------------
    if best_state is not None:
        _unwrap(model).load_state_dict(best_state)
    test: dict[str, float] = {}
    if rd.test is not None:
        tl = eval_loader(rd.test, cfg, sess.rank, sess.world, cuda)
        test = {k: v for k, v in evaluate(model, tl, rd, loss_fn, sess, autocast, names).items() if k != "loss"}
    wall = time.time() - started
    accel = sess.world * (wall / 3600.0) if cuda else 0.0
    result = {
        "sweep": cfg.sweep, "trial_key": cfg.trial_key, "recipe": cfg.recipe, "init": cfg.init,
        "dataset": cfg.dataset or "+".join(s["dataset"] for s in cfg.sources), "task": rd.task, "shot": cfg.shot,
        "lr": cfg.lr, "seed": cfg.seed, "metric": rd.metric, "value": test.get(rd.metric, float("nan")),
        "test": test, "best_epoch": best_epoch, "epochs_run": len(history),
        "epochs_started": len(epochs_started(trial_dir)) if sess.is_main else None,
        "status": "finished", "error": None,
        "wall_seconds": wall, "accelerator_hours": accel, "mlflow_run_id": rt.get("run_id"),
        "best_val_loss": stopper.best if math.isfinite(stopper.best) else None,
    }
    if sess.is_main:
        if cfg.sources:  # pre-training: the product is the backbone
            rt_out = rt.get("on_finish")
            if rt_out:
                _export_backbone(model, rt_out, cfg, result)
        tlog.log_metrics({f"test_{k}": v for k, v in test.items()} | {
            "best_epoch": best_epoch, "epochs_run": len(history), "wall_seconds": wall,
            "accelerator_hours": accel}, step=max(epoch, 0))
        tlog.log_text(_curves_csv(history), "learning_curves.csv")
        tlog.log_text(json.dumps(cfg.to_dict(), indent=1, default=str), "trial_config.json")
        tlog.set_tags({"benchxfer.status": "finished"})
        write_json(trial_dir / RESULT, result)
        tlog.close("FINISHED")
    sess.report({f"test_{k}": v for k, v in test.items()} | {"done": True, "epoch": epoch,
                                                              "best_val_loss": stopper.best})
    return result


def _refuse_known_failure(trial_dir: Path) -> None:
    """A trial that failed for a reason a retry cannot fix (a NaN loss) fails again at once."""
    path = trial_dir / FAILED
    if path.exists():
        info = json.loads(path.read_text())
        if not info.get("retryable", True):
            raise TrialFailed(info["reason"])


def _curves_csv(history: list[dict]) -> str:
    if not history:
        return ""
    cols = list(history[0])
    return "\n".join([",".join(cols)] + [",".join(f"{r.get(c, '')}" for c in cols) for r in history]) + "\n"


def _export_backbone(model: nn.Module, out: dict[str, Any], cfg: TrainConfig, result: dict) -> None:
    """Pre-training's product: the backbone (no head) saved into the zoo under its new name."""
    state = _unwrap(model).state_dict()
    head = ("fc.", "head.fc.")
    backbone = {k: v.detach().cpu() for k, v in state.items() if not k.startswith(head)}
    provenance = {"sources": cfg.sources, "epochs": result["epochs_run"], "start": cfg.init, "recipe": cfg.recipe,
                  "mlflow_run_id": result["mlflow_run_id"], "trial_key": cfg.trial_key}
    from benchxfer.train.data_setup import normalisation

    mean, std = normalisation(cfg)
    path = zoo.save_local_init(out["name"], backbone, cfg.arch, provenance, zoo=out.get("zoo"),
                               mean=tuple(mean), std=tuple(std))
    result["zoo_path"] = str(path)
