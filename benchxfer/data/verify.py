"""``verify``: counts per split and class, and every problem of a dataset root, collected rather than raised.

It walks the splits the dataset's protocol has (PadChest: train and test; a ``val`` only where the options carve
one), with the reader options a run gives (``official``, ``views``, ...), decodes each image once on every core it
is given, and tells a patient in two splits apart by what the protocol's split keeps apart
(:attr:`DatasetCfg.split_by`): a problem where the split is by patient, information where it is by image."""

from __future__ import annotations

import os
from collections import defaultdict
from concurrent.futures import ProcessPoolExecutor
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Iterator, Mapping

import numpy as np

from benchxfer.data.catalog import SPLITS, DatasetCfg, Problems, Record
from benchxfer.data.indexing import build_index, make_targets, open_root
from benchxfer.data.pixels import record_image, record_mask
from benchxfer.errors import BenchxferError

SHOWN = 10  # problems (and notes) printed without --all
CHUNK = 64  # images a decoding process takes at a time


@dataclass
class Report:
    name: str
    root: Path
    counts: dict[str, int] = field(default_factory=dict)
    class_counts: dict[str, dict[str, float]] = field(default_factory=dict)  # split -> class -> positives
    problems: list[str] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # what the protocol allows, told but not a problem
    summary: list[str] = field(default_factory=list)  # one line per kind of note
    decoded: int = 0

    @property
    def ok(self) -> bool:
        return not self.problems

    def lines(self, every: bool = False) -> list[str]:
        """The report; without ``every``, the first :data:`SHOWN` problems and a line per kind of note."""
        out = [f"{self.name} at {self.root}"]
        for split in SPLITS:
            if split in self.counts:
                per = self.class_counts.get(split, {})
                detail = ", ".join(f"{k}: {v:g}" for k, v in per.items())
                out.append(f"  {split}: {self.counts[split]} images" + (f" ({detail})" if detail else ""))
        if self.decoded:
            out.append(f"  {self.decoded} images decoded")
        if every:
            out += [f"  note: {n}" for n in self.notes]
        else:
            out += [f"  note: {n}" for n in self.summary]
        out.append(f"  {len(self.problems)} problem(s)" + (":" if self.problems else ""))
        shown = self.problems if every else self.problems[:SHOWN]
        out += [f"    {p}" for p in shown]
        if len(shown) < len(self.problems):
            out.append(f"    ... and {len(self.problems) - len(shown)} more (--all lists every one)")
        return out


def protocol_splits(cfg: DatasetCfg, options: Mapping[str, Any]) -> tuple[str, ...]:
    """The splits the dataset has with these options: its protocol's, plus a ``val`` that ``val_fraction`` > 0
    carves (a ``val`` that ``val_fraction`` 0 leaves empty is passed over when it is walked)."""
    fraction = options.get("val_fraction")
    carved = fraction is not None and _number(fraction) > 0
    return tuple(s for s in SPLITS if s in cfg.splits or (s == "val" and carved))


def _number(value: Any) -> float:
    try:
        return float(value)
    except (TypeError, ValueError):
        return -1.0  # the reader's own check names the bad value


def verify(name: str, root: str | Path, *, lists: Mapping[str, str | Path] | None = None, decode: bool = True,
           workers: int | None = None, progress: Callable[[int, int], None] | None = None,
           **reader_options: Any) -> Report:
    """Index every split of the protocol, decode every image (and mask) once unless ``decode=False`` (on
    ``workers`` processes, default every core this process may use), and check patients across splits.
    ``progress(done, total)`` is called as images are decoded."""
    cfg, root = open_root(name, root, reader_options)
    report = Report(name, root)
    problems = Problems(collect=True)
    patients: dict[str, set[str]] = defaultdict(set)
    images: dict[str, list[str]] = defaultdict(list)
    to_decode: dict[str, Record] = {}
    splits = protocol_splits(cfg, reader_options)
    if lists:
        splits = tuple(s for s in SPLITS if s in splits or s in lists)
    for split in splits:
        try:
            index = build_index(cfg, root, split, lists, reader_options, problems)
        except BenchxferError as err:
            problems(str(err))
            continue
        records = index.records
        if not records and split == "val" and _number(reader_options.get("val_fraction", -1)) == 0:
            continue  # no validation set asked for (the pre-training's NIH and CheXpert sources)
        report.counts[split] = len(records)
        if not records:
            problems(f"split {split!r} is empty")
            continue
        for rec in records:
            if rec.patient is not None:
                patients[rec.patient].add(split)
            images[rec.image].append(split)
            to_decode.setdefault(rec.image, rec)
        targets = make_targets(cfg, records, "ones", 0)
        classes = index.classes or cfg.classes
        if targets is not None and cfg.kind.target == "multi-hot":
            report.class_counts[split] = {c: float(v) for c, v in zip(classes, (targets >= 0.5).sum(0))}
        elif targets is not None:
            values, counts = np.unique(targets, return_counts=True)
            names = classes if len(classes) else tuple(str(v) for v in values)
            report.class_counts[split] = {names[int(v)] if int(v) < len(names) else str(v): float(c) for v, c in zip(values, counts)}
    if decode and to_decode:
        for problem in decode_all(cfg, list(to_decode.values()), workers, progress):
            problems(problem)
        report.decoded = len(to_decode)
    for image, where_ in images.items():
        if len(where_) > 1:
            problems(f"image {image} is in more than one split: {', '.join(where_)}"
                     if len(set(where_)) > 1 else f"image {image} is named {len(where_)} times in split {where_[0]}")
    shared = [(p, s) for p, s in sorted(patients.items()) if len(s) > 1]
    for patient, in_splits in shared:
        line = f"patient {patient} appears in more than one split: {', '.join(s for s in SPLITS if s in in_splits)}"
        if cfg.split_by == "image" and not lists:
            report.notes.append(f"{line} (the protocol splits by image)")
        else:
            problems(line)
    if report.notes:
        report.summary.append(f"{len(report.notes)} patient(s) have images in more than one split, as {name}'s "
                              "protocol allows: it splits by image, not by patient (--all lists them)")
    report.problems = problems.items
    return report


def default_workers() -> int:
    """The cores this process may run on."""
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not Linux
        return os.cpu_count() or 1


def decode_all(cfg: DatasetCfg, records: list[Record], workers: int | None = None,
               progress: Callable[[int, int], None] | None = None) -> Iterator[str]:
    """The problems of decoding each record's image (and mask), on ``workers`` processes, in record order."""
    workers = default_workers() if workers is None else max(1, int(workers))
    chunks = [records[i:i + CHUNK] for i in range(0, len(records), CHUNK)]
    done = 0
    if progress is not None:
        progress(0, len(records))
    if workers == 1 or len(chunks) == 1:
        results: Iterator[list[str]] = (_decode_chunk((cfg, chunk)) for chunk in chunks)
        for chunk, found in zip(chunks, results):
            done += len(chunk)
            if progress is not None:
                progress(done, len(records))
            yield from found
        return
    with ProcessPoolExecutor(min(workers, len(chunks))) as pool:
        for chunk, found in zip(chunks, pool.map(_decode_chunk, [(cfg, c) for c in chunks])):
            done += len(chunk)
            if progress is not None:
                progress(done, len(records))
            yield from found


def _decode_chunk(job: tuple[DatasetCfg, list[Record]]) -> list[str]:
    cfg, records = job
    found = []
    for rec in records:
        try:
            img = record_image(cfg, rec)
            if cfg.kind.dense:
                record_mask(cfg, rec, img.shape[:2])
        except BenchxferError as err:
            found.append(f"{err} (named at {rec.origin})" if rec.origin not in str(err) else str(err))
    return found
