"""The dry run's listing of a plan (``benchxfer sweep --dry-run``): the lines it prints, each fact taken from the
module that owns it (a trial's disk and the sweep's: :mod:`benchxfer.plan.disk`; its GPU columns:
:func:`benchxfer.gpu_memory.plan_columns`; the lr search in words: :meth:`benchxfer.plan.schema.SearchOptions.describe`)."""

from __future__ import annotations

from benchxfer.gpu_memory import plan_columns
from benchxfer.plan import disk
from benchxfer.plan.planning import Plan
from benchxfer.plan.schema import LrSearch


def lines(plan: Plan, limit: int | None) -> list[str]:
    """Each trial's row (the first ``limit``; None: all), the totals, the disk, what runs first, what is left out
    and what this machine lacks."""
    d = plan.describe()
    trials = plan.trials
    shown = trials if limit is None else trials[:limit]
    disks = [disk.of_trial(t, plan.spec.keep) for t in trials]
    r = plan.spec.resources  # per shown trial: images per micro-batch on a worker, GPU memory per worker, per GPU
    gpus = [plan_columns(t.config.arch, t.config.size, t.config.images_per_pass(r.workers), t.task, r.gpus_per_worker)
            for t in shown]
    out = [f"{'#':>5}  {'trial key':<60} {'recipe':<15} {'arch':<10} {'task':<12} {'micro':>5} "
           f"{'GPU memory':>12} {'per GPU':>7} {'disk running/final':>20}"]
    for i, (t, g) in enumerate(zip(shown, gpus)):
        out.append(f"{i:>5}  {t.key:<60} {t.recipe:<15} {t.config.arch:<10} {t.task:<12} {g['micro']:>5} "
                   f"{g['gpu_memory']:>12} {g['per_gpu']:>7} "
                   f"{disk.human(disks[i].running) + ' / ' + disk.human(disks[i].final):>20}")
    if len(shown) < len(trials):
        out.append(f"  ... {len(trials) - len(shown)} more (use --limit 0 to list all)")
    lr, n = plan.spec.lr, len(plan.cells)
    stage1 = (f"; stage 1 before them: {n} cells x {lr.trials} search trials = {n * lr.trials}, "
              f"{lr.options.describe()}" if isinstance(lr, LrSearch) else "")
    out.append(f"Total: {d['trials']} trials = {d['inits']} inits x {d['datasets']} datasets x lr [{d['lr']}] "
               f"x {d['seeds']} seeds" + (f" x {d['shots']} shots" if d["shots"] != 1 else "") + stage1)
    out.append(disk.sweep_line(disks, plan.spec.keep, r.max_concurrent))
    if any(g["gpu_memory"].endswith("*") for g in gpus):
        out.append("GPU memory: * extrapolated from the measured peaks (benchxfer/gpu_memory.py)")
    out += [f"Before the trials: pre-train init {pspec.name!r} from {pspec.path}" for pspec in plan.to_pretrain]
    out += [f"  left out: {line}" for line in plan.left_out]  # cells the data cannot draw: the others are planned
    if plan.absent:
        out.append(f"Not on this machine ({len(plan.absent)}); the real run refuses until they are there:")
        out += [f"  absent: {line}" for line in plan.absent]
    return out
