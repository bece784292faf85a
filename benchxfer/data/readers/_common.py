"""Helpers shared by the readers: existence checks that list a folder once, CSV rows with line numbers."""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from importlib import resources
from pathlib import Path
from typing import Iterator

from benchxfer.data.catalog import IndexCtx, Problems, where
from benchxfer.data.imageio import safe_join
from benchxfer.errors import BenchxferError
from benchxfer.textfile import open_problem, utf8_text


class FolderFiles:
    """Names in folders, listed once per folder, so that checking 100k images costs a few listdirs."""

    def __init__(self) -> None:
        self._seen: dict[Path, set[str]] = {}

    def exists(self, path: Path) -> bool:
        folder = path.parent
        if folder not in self._seen:
            try:
                self._seen[folder] = set(os.listdir(folder))
            except OSError:
                self._seen[folder] = set()
        return path.name in self._seen[folder]

    def locate(self, folder: Path, rel: str, origin: str, report: Problems) -> Path | None:
        """The image that a list or CSV row (at ``origin``) names as ``rel`` below ``folder``; None, reported,
        when the name leaves the dataset root (absolute, ``~``, ``..``) or the file is missing."""
        try:
            path = safe_join(folder, rel, origin)
        except BenchxferError as err:
            report(str(err))
            return None
        if self.exists(path):
            return path
        report(f"{origin}: image {path} is missing")
        return None


# The second study's default views (``views: ["PA", "AP"]`` unless a config names more); its 4-source "cxr"
# pre-training also kept "AP Supine", "L" (lateral) and "COSTAL".
FRONTAL_VIEWS = ("PA", "AP")


def view_filter(ctx: IndexCtx) -> frozenset[str] | None:
    """The ``views`` reader option: the view names to keep (the second study's naming), or None: every view."""
    views = ctx.options.get("views")
    return None if views is None else frozenset(str(v) for v in views)


def shipped_split(name: str) -> Path:
    """A split list shipped with benchxfer (``benchxfer/data/splits``)."""
    return Path(str(resources.files("benchxfer.data").joinpath("splits", name)))


def csv_rows(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, dict[str, str]]]:
    """Rows of a CSV with their line numbers; column names are stripped (a BOM too); missing columns are an
    error."""
    if not path.exists() and not path.is_symlink() and Path(f"{path}.gz").exists():
        path = Path(f"{path}.gz")
    try:
        if path.suffix == ".gz":
            with gzip.open(path, "rb") as fh:
                raw = fh.read()
        else:
            raw = path.read_bytes()
    except (EOFError, gzip.BadGzipFile, zlib.error) as err:
        kind = "ends early (truncated)" if isinstance(err, EOFError) else f"is damaged ({err})"
        raise BenchxferError(f"{path}: the compressed file {kind}; download or copy it again") from None
    except OSError as err:
        raise open_problem(path, err, "CSV file") from None
    text = utf8_text(path, raw, "a CSV file")
    reader = csv.reader(io.StringIO(text, newline=""))
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise BenchxferError(f"{path}: CSV file is empty") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise BenchxferError(f"{where(path, 1)}: missing column(s) {', '.join(missing)}; found {', '.join(header)}")
    for row in reader:
        if not any(cell.strip() for cell in row):
            continue
        if len(row) != len(header):
            raise BenchxferError(
                f"{where(path, reader.line_num)}: {len(row)} cells, the header has {len(header)}"
            )
        yield reader.line_num, dict(zip(header, (c.strip() for c in row)))
