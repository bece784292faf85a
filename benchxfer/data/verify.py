"""``verify``: counts per split and class, and every problem of a dataset root, collected rather than raised."""

from __future__ import annotations

from collections import defaultdict
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping

import numpy as np

from benchxfer.data.catalog import SPLITS, Problems
from benchxfer.data.indexing import build_index, make_targets, open_root
from benchxfer.data.pixels import record_image, record_mask
from benchxfer.errors import BenchxferError


@dataclass
class Report:
    name: str
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> class -> positives
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self) -> list[str]:
        out = [f"{self.name} at {self.root}"]
        for split in SPLITS:
            if split in self.counts:
                per = self.class_counts.get(split, {})
                detail = ", ".join(f"{k}: {v:g}" for k, v in per.items())
                out.append(f"  {split}: {self.counts[split]} images" + (f" ({detail})" if detail else ""))
        out.append(f"  {len(self.problems)} problem(s)" + (":" if self.problems else ""))
        out += [f"    {p}" for p in self.problems]
        return out


def verify(name: str, root: str | Path, *, lists: Mapping[str, str | Path] | None = None, decode: bool = True,
           **reader_options: Any) -> Report:
    """Index every split, decode every image (and mask) unless ``decode=False``, and check patients."""
    cfg, root = open_root(name, root, reader_options)
    report = Report(name, root)
    problems = Problems(collect=True)
    patients: dict[str, set[str]] = defaultdict(set)
    for split in SPLITS:
        try:
            index = build_index(cfg, root, split, lists, reader_options, problems)
        except BenchxferError as err:
            problems(str(err))
            continue
        records = index.records
        report.counts[split] = len(records)
        if not records:
            problems(f"split {split!r} is empty")
            continue
        for rec in records:
            if rec.patient is not None:
                patients[rec.patient].add(split)
        targets = make_targets(cfg, records, "ones", 0)
        classes = index.classes or cfg.classes
        if targets is not None and cfg.kind.target == "multi-hot":
            report.class_counts[split] = {c: float(v) for c, v in zip(classes, (targets >= 0.5).sum(0))}
        elif targets is not None:
            values, counts = np.unique(targets, return_counts=True)
            names = classes if len(classes) else tuple(str(v) for v in values)
            report.class_counts[split] = {names[int(v)] if int(v) < len(names) else str(v): float(c) for v, c in zip(values, counts)}
        if decode:
            for rec in records:
                try:
                    img = record_image(cfg, rec)
                    if cfg.kind.dense:
                        record_mask(cfg, rec, img.shape[:2])
                except BenchxferError as err:
                    problems(f"{err} (named at {rec.origin})" if rec.origin not in str(err) else str(err))
    for patient, splits in sorted(patients.items()):
        if len(splits) > 1:
            problems(f"patient {patient} appears in more than one split: {', '.join(s for s in SPLITS if s in splits)}")
    report.problems = problems.items
    return report
