"""Opening a split without torch: the checks every caller makes first (root, layout, reader options) and the
records of one split (a reader's own, or the ones a list file selects), with their targets. Used by the
dataset (dataset.py), the cache writer (cache.py), ``data verify`` (verify.py) and the planner."""

from __future__ import annotations

import glob
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from benchxfer.data.catalog import SPLITS, DatasetCfg, Index, IndexCtx, Problems, Record, get_dataset, where
from benchxfer.data.imageio import read_lines
from benchxfer.data.labels import apply_uncertain
from benchxfer.errors import BenchxferError


def open_root(name: str, root: str | Path, options: Mapping[str, Any]) -> tuple[DatasetCfg, Path]:
    """The dataset's entry and its absolute root, once the options are ones it takes and the root has its layout."""
    cfg = get_dataset(name)
    check_options(cfg, options)
    root = Path(root).expanduser().resolve()
    check_root(name, root)
    return cfg, root


def check_root(name: str, root: str | Path) -> None:
    """Fast layout check (no decoding): the root and the layout's key files or folders exist."""
    cfg = get_dataset(name)
    root = Path(root).expanduser()
    if not root.is_dir():
        raise BenchxferError(f"dataset {name!r}: root {root} does not exist or is not a folder")
    for need in cfg.required:
        alternatives = need.split("|")
        if not any(glob.glob(str(root / alt)) if "*" in alt else (root / alt).exists() for alt in alternatives):
            raise BenchxferError(
                f"dataset {name!r}: {root / alternatives[0]} is missing; the {name} layout needs "
                f"{' or '.join(alternatives)} below its root"
            )


def allowed_options(cfg: DatasetCfg) -> tuple[str, ...]:
    """The reader's own options, plus ``uncertain`` (multi-label sets) and ``cache_size`` (every set)."""
    return (*cfg.options, *(("uncertain",) if cfg.kind.target == "multi-hot" else ()), "cache_size")


def check_options(cfg: DatasetCfg, options: Mapping[str, Any]) -> None:
    """Reader options must be ones the dataset takes: a typo is an error, not silently ignored."""
    takes = allowed_options(cfg)
    unknown = sorted(set(options) - set(takes))
    if unknown:
        allowed = ", ".join(takes) or "none"
        raise BenchxferError(f"dataset {cfg.name!r}: unknown option(s) {', '.join(unknown)}; it takes: {allowed}")


def build_index(
    cfg: DatasetCfg,
    root: Path,
    split: str,
    lists: Mapping[str, str | Path] | None,
    options: dict[str, Any],
    report: Problems,
) -> Index:
    """Records of one split; ``lists`` replaces the default split (see :func:`select_by_list`)."""
    ctx = IndexCtx(lists=lists, report=report, options=dict(options))
    if lists and split in lists and not cfg.native_lists:
        every: list[Record] = []
        classes = None
        for s in SPLITS:
            idx = cfg.reader(root, s, IndexCtx(lists=None, report=report, options=dict(options)))
            every += idx.records
            classes = classes or idx.classes
        return Index(select_by_list(every, root, Path(lists[split]), report), classes)
    return cfg.reader(root, split, ctx)


def select_by_list(records: list[Record], root: Path, list_file: Path, report: Problems) -> list[Record]:
    """Generic ``lists`` rule: each line names one image (path relative to root, or its file name)."""
    by_key: dict[str, Record] = {}
    for rec in records:
        by_key.setdefault(str(Path(rec.image).relative_to(root)) if rec.image.startswith(str(root)) else rec.image, rec)
        by_key.setdefault(Path(rec.image).name, rec)
    out = []
    for lineno, line in read_lines(list_file):
        name = line.replace(",", " ").split()[0]
        if ".." in Path(name).parts:
            report(f"{where(list_file, lineno)}: path {name!r} escapes the dataset root {root}")
            continue
        rec = by_key.get(name)
        if rec is None:
            report(f"{where(list_file, lineno)}: image {name!r} is not in the dataset at {root}")
            continue
        out.append(rec)
    return out


def raw_labels(cfg: DatasetCfg, records: list[Record]) -> np.ndarray:
    """A multi-label split's cells as read (1, 0, -1 = uncertain, nan = blank), N x C float32."""
    if not records:
        return np.zeros((0, len(cfg.classes)), np.float32)
    return np.stack([r.label for r in records]).astype(np.float32, copy=False)


def make_targets(cfg: DatasetCfg, records: list[Record], uncertain: str, seed: int,
                 raw: np.ndarray | None = None) -> np.ndarray | None:
    """The split's targets: multi-label cells through the ``uncertain`` policy (``raw``: :func:`raw_labels`, when
    the caller has it already), else one int per record; None for a segmentation set."""
    if cfg.kind.dense:
        return None
    if cfg.kind.target == "multi-hot":
        return apply_uncertain(raw_labels(cfg, records) if raw is None else raw, uncertain, seed)
    return np.asarray([int(r.label) for r in records], dtype=np.int64)
