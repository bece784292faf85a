"""``benchxfer data``: list the datasets, verify a root, write the preprocessed cache or a synthetic set."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import click

from benchxfer.errors import BenchxferError


def _readable(root: Path) -> Path:
    """A dataset root that exists must be readable (reading it later would fail deep inside a reader)."""
    if root.is_dir() and not os.access(root, os.R_OK | os.X_OK):
        raise BenchxferError(f"--root {root}: cannot read the folder (permission denied)")
    return root


def _lists(values: tuple[str, ...]) -> dict[str, str] | None:
    out = {}
    for value in values:
        split, sep, path = value.partition("=")
        if not sep or split not in ("train", "val", "test"):
            raise BenchxferError(f"--lists {value!r}: use SPLIT=FILE with SPLIT one of train, val, test")
        if not path.strip():
            raise BenchxferError(f"--lists {value!r}: the file name is empty; use SPLIT=FILE")
        if Path(path).is_dir():
            raise BenchxferError(f"--lists {value!r}: {path} is a folder; give a list file")
        if split in out:
            raise BenchxferError(f"--lists {value!r}: split {split!r} is given twice")
        out[split] = path
    return out or None


@click.group("data")
def data() -> None:
    """Datasets: list them, verify a folder, build the preprocessed cache."""


@data.command("list")
def list_cmd() -> None:
    """Every registered dataset: task, classes, metric and split rule."""
    from benchxfer.data import get_dataset, list_datasets

    for name in list_datasets():
        cfg = get_dataset(name)
        n = "from root" if cfg.classes_from_root else str(len(cfg.classes))
        click.echo(f"{name:18} {cfg.task:12} classes={n:9} metric={cfg.metric:8} {cfg.description}")


def _views(values: tuple[str, ...]) -> list[str] | None:
    """``--views PA,AP --views "AP Supine"``: the view names, in order, each once."""
    out: list[str] = []
    for value in values:
        for view in value.split(","):
            view = view.strip()
            if not view:
                raise BenchxferError(f"--views {value!r}: a view name is empty; use e.g. --views PA,AP")
            if view not in out:
                out.append(view)
    return out or None


class _Bar:
    """A progress bar on stderr (rich) for the images being decoded; nothing where stderr is not a terminal."""

    def __init__(self) -> None:
        self.progress: Any = None
        self.task: Any = None
        self.off = False

    def __call__(self, done: int, total: int) -> None:
        if self.off:
            return
        if self.progress is None:
            from rich.console import Console
            from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

            console = Console(stderr=True)
            if not console.is_terminal:
                self.off = True
                return
            self.progress = Progress(TextColumn("decoding"), BarColumn(), MofNCompleteColumn(),
                                     TimeRemainingColumn(), console=console, transient=True)
            self.progress.start()
            self.task = self.progress.add_task("decode", total=total)
        self.progress.update(self.task, completed=done, total=total)

    def close(self) -> None:
        if self.progress is not None:
            self.progress.stop()


@data.command("verify")
@click.argument("name")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="The dataset folder as distributed.")
@click.option("--lists", multiple=True, metavar="SPLIT=FILE", help="Replace a split's list file (repeatable).")
@click.option("--official", type=click.Choice(["first-study", "nih"]), default=None,
              help="ChestX-ray14: the first study's lists (default) or NIH's own (train_val_list.txt, test_list.txt "
                   "and Data_Entry_2017_v2020.csv), as the pre-training reads them.")
@click.option("--views", multiple=True, metavar="VIEW[,VIEW...]",
              help="Keep only these views, as a run with the option views does (e.g. --views PA,AP).")
@click.option("--val-fraction", type=float, default=None, help="The reader option val_fraction.")
@click.option("--no-decode", is_flag=True, help="Check lists and files only; do not decode images.")
@click.option("--workers", type=click.IntRange(1, 1024), default=None,
              help="Processes decoding images.  [default: the cores available]")
@click.option("--all", "every", is_flag=True, help="Print every problem and note (default: the first 10 and a "
              "summary).")
def verify_cmd(name: str, root: Path, lists: tuple[str, ...], official: str | None, views: tuple[str, ...],
               val_fraction: float | None, no_decode: bool, workers: int | None, every: bool) -> None:
    """Counts per split and class; unreadable images, missing files, images without masks, shared patients."""
    from benchxfer.data.verify import verify

    options = {k: v for k, v in (("official", official), ("views", _views(views)), ("val_fraction", val_fraction))
               if v is not None}
    bar = _Bar()
    try:
        report = verify(name, _readable(root), lists=_lists(lists), decode=not no_decode, workers=workers,
                        progress=bar, **options)
    finally:
        bar.close()
    for line in report.lines(every):
        click.echo(line)
    if not report.ok:  # the report above lists the problems; stderr gets the one line
        raise BenchxferError(f"{name} at {report.root}: {len(report.problems)} problem(s), the first: "
                             f"{report.problems[0]}")


@data.command("cache")
@click.argument("name")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="The dataset folder as distributed.")
@click.option("--size", required=True, help="'original' (exact: every image at its own size, for any protocol) or "
              "a shorter side in px (lossy, e.g. 256; docs/datasets.md).")
@click.option("--split", "splits", multiple=True, type=click.Choice(["train", "val", "test"]), help="Default: all.")
@click.option("--workers", default=1, show_default=True, type=click.IntRange(1, 256),
              help="Processes decoding in parallel.")
@click.option("--cache-dir", type=click.Path(path_type=Path), default=None, help="Default: $BENCHXFER_HOME/cache.")
def cache_cmd(name: str, root: Path, size: str, splits: tuple[str, ...], workers: int, cache_dir: Path | None) -> None:
    """Write the preprocessed cache (images resized once, read back without decoding)."""
    from benchxfer.data.cache import write_cache
    from benchxfer.paths import check_folder, home

    check_folder((cache_dir or home() / "cache").expanduser().resolve(), "cache folder")

    for folder in write_cache(name, _readable(root), size, splits or ("train", "val", "test"), cache_dir=cache_dir, workers=workers):
        click.echo(f"wrote {folder}")


def _synthetic_option(key: str, *, low: int | None = None, help: str | None = None):
    """``data synthetic --KEY``: its default is ``SyntheticSet``'s, its values those the sweep file's ``synthetic:``
    block allows (``plan.schema.SYNTHETIC_RULES``; ``low`` raises the least, as the block's no-empty-set rule does)."""
    from benchxfer.data.synthetic import SyntheticSet
    from benchxfer.plan.schema import SYNTHETIC_RULES, OneOf

    rule = SYNTHETIC_RULES[key]
    kind = (click.Choice(rule.allowed()) if isinstance(rule, OneOf)
            else click.IntRange(int(rule.low if low is None else low), int(rule.high)))
    return click.option(f"--{key.replace('_', '-')}", default=getattr(SyntheticSet, key), show_default=True,
                        type=kind, help=help)


@data.command("synthetic")
@click.argument("name")
@click.option("--root", required=True, type=click.Path(path_type=Path))
@_synthetic_option("n_train", low=1)
@_synthetic_option("n_val")
@_synthetic_option("n_test")
@_synthetic_option("size", help="Stored image size in px.")
@_synthetic_option("seed")
@_synthetic_option("family")
def synthetic_cmd(name: str, root: Path, n_train: int, n_val: int, n_test: int, size: int, seed: int, family: str) -> None:
    """Write a synthetic dataset NAME in its real on-disk layout."""
    from benchxfer.data import synthetic

    out = synthetic.write(name, root, n_train=n_train, n_val=n_val, n_test=n_test, size=size, seed=seed, family=family)
    click.echo(f"wrote {out}")


@data.command("drive-augment")
@click.option("--root", required=True, type=click.Path(path_type=Path), help="The original DRIVE release.")
@click.option("--out", required=True, type=click.Path(path_type=Path), help="A new or empty folder.")
@click.option("--seed", default=0, show_default=True, type=click.IntRange(0, 2**32 - 1))
def drive_augment_cmd(root: Path, out: Path, seed: int) -> None:
    """Write SA-UNet's offline-augmented DRIVE (the first study's training data) from the original release; the
    drive reader reads OUT as SA-UNet's layout."""
    from benchxfer.data.offline import augment_drive

    click.echo(f"wrote {augment_drive(_readable(root), out, seed=seed)}")
