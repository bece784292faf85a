"""Where a dataset's files are: a folder that holds it, or the synthetic set benchxfer writes for ``root: synthetic``."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from benchxfer import paths
from benchxfer.data.indexing import check_root
from benchxfer.errors import Absent


def resolve_root(dataset: str, root: str, synthetic: dict[str, Any], where: str, write_synthetic: bool,
                 folder: str | None = None) -> str:
    """A dataset's root: a folder that must exist and hold the dataset, or for ``root: synthetic`` the set that
    benchxfer writes under ``<home>/data/synthetic/<folder>`` (only when ``write_synthetic``: a dry run leaves
    the disk alone). ``where`` names the file and key in the one-line error."""
    if root == "synthetic":
        from benchxfer.data import synthetic as made  # loads on first use

        target = paths.synthetic_dir() / (folder or dataset)
        return str(made.ensure(dataset, target, **synthetic)) if write_synthetic else str(target)
    if not Path(root).exists():
        raise Absent(f"{where}: folder {root} does not exist (dataset {dataset!r})")  # a dry run lists it
    check_root(dataset, root)
    return str(root)
