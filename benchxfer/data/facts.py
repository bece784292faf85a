"""What a trial's dataset is, in facts a run can record: the split sizes it uses, the list files that define the
splits and a sha256 over them (``tracking.TrialRun.log_dataset`` records them as the MLflow run's dataset input)."""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path
from typing import Any, Mapping


@dataclass(frozen=True)
class DatasetFacts:
    """What the run records about its dataset."""

    name: str
    root: str
    splits: dict[str, int]  # split -> examples the trial uses (the train split after shots / fraction)
    list_files: tuple[str, ...]  # the files that define the splits, relative to root (empty for folder layouts)
    sha256: str  # over the list files (path and bytes), else over the splits' image paths


def dataset_facts(name: str, root: str | Path, splits: Mapping[str, Any]) -> DatasetFacts:
    """Facts from opened splits (``benchxfer.data.ImageDataset`` objects: ``records``, ``len()``)."""
    root = Path(root).expanduser().resolve()
    lists: set[Path] = set()
    images: list[str] = []
    for split, ds in splits.items():
        for rec in getattr(ds, "records", ()):
            file, sep, line = rec.origin.rpartition(":")
            if sep and line.isdigit():  # "list file:line"
                lists.add(Path(file).resolve())
            images.append(f"{split}\t{_rel(Path(rec.image), root)}")
    h = hashlib.sha256()
    rel_lists = sorted(_rel(p, root) for p in lists)
    if rel_lists:
        for rel in rel_lists:
            h.update(rel.encode() + b"\0" + (root / rel).read_bytes() + b"\0")
    else:
        h.update("\n".join(sorted(images)).encode())
    return DatasetFacts(name, str(root), {s: len(ds) for s, ds in splits.items()}, tuple(rel_lists), h.hexdigest())


def describe_dataset(name: str, root: str | Path, *, shot: int | None = None, seed: int = 0,
                     **options: Any) -> DatasetFacts:
    """Open the train, val and test splits of ``name`` at ``root`` (lists only: no image is read) and
    describe them. ``shot``, ``seed`` and ``options`` (e.g. ``fraction``) as the trial opens them."""
    from benchxfer import data

    opts = {k: v for k, v in options.items() if k not in ("size_hint", "cache_dir")}
    frac = opts.pop("fraction", None)
    splits = {"train": data.open_dataset(name, root, "train", shots=shot, fraction=frac, seed=seed, **opts)}
    carved = float(opts.get("val_fraction") or 0) > 0  # a val split carved from training where the set has none
    for split in ("val", "test"):
        if split in data.get_dataset(name).splits or (split == "val" and carved):
            splits[split] = data.open_dataset(name, root, split, fraction=frac, **opts)  # cut where the set says
    return dataset_facts(name, root, splits)


def _rel(path: Path, root: Path) -> str:
    try:
        return str(path.resolve().relative_to(root))
    except ValueError:
        return str(path)
