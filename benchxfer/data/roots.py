"""Where a dataset's files are: a folder that holds it, or the synthetic set benchxfer writes for ``root: synthetic``."""

from __future__ import annotations

import fcntl
import hashlib
import json
from pathlib import Path
from typing import TYPE_CHECKING, Any

from benchxfer import paths
from benchxfer.data.indexing import check_root
from benchxfer.errors import Absent

if TYPE_CHECKING:
    from benchxfer.data.synthetic import SyntheticSet


def synthetic_folder(name: str, settings: dict[str, Any], generator: int) -> str:
    """The folder of a synthetic set under ``<home>/data/synthetic``: ``name`` for the generator's defaults, else
    ``name-<hash of the settings and the generator's version>``, so that each setting has a folder of its own and
    a sweep never rewrites the images another sweep is reading."""
    if not settings:
        return name
    blob = json.dumps({"settings": settings, "generator": generator}, sort_keys=True, default=str)
    return f"{name}-{hashlib.sha1(blob.encode()).hexdigest()[:8]}"


def resolve_root(dataset: str, root: str, synthetic: SyntheticSet, where: str, write_synthetic: bool,
                 folder: str | None = None) -> str:
    """A dataset's root: a folder that must exist and hold the dataset, or for ``root: synthetic`` the set that
    benchxfer writes under ``<home>/data/synthetic/<folder>[-<hash of its settings>]`` (only when
    ``write_synthetic``: a dry run leaves the disk alone; one writer at a time, under a lock beside it). ``where`` names the file and key in the one-line error."""
    if root == "synthetic":
        from benchxfer.data import synthetic as made  # loads on first use

        target = paths.synthetic_dir() / synthetic_folder(folder or dataset, synthetic.settings(), made.GENERATOR)
        if not write_synthetic:
            return str(target)
        target.parent.mkdir(parents=True, exist_ok=True)
        with open(target.parent / f".{target.name}.lock", "w") as lock:  # two sweeps writing one set: one at a time
            fcntl.flock(lock, fcntl.LOCK_EX)
            return str(made.ensure(dataset, target, synthetic))
    if not Path(root).exists():
        raise Absent(f"{where}: folder {root} does not exist (dataset {dataset!r})")  # a dry run lists it
    check_root(dataset, root)
    return str(root)
