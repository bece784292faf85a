"""Helpers shared by the readers: existence checks that list a folder once, CSV rows with line numbers."""

from __future__ import annotations

import csv
import gzip
import io
import os
import zlib
from importlib import resources
from operator import itemgetter
from pathlib import Path
from typing import Any, Iterator

from benchxfer.data.catalog import IndexCtx, Problems, where
from benchxfer.data.imageio import safe_join
from benchxfer.errors import BenchxferError
from benchxfer.textfile import open_problem, utf8_text


class FolderFiles:
    """Names in folders, listed once per folder, so that checking 100k images in a few folders costs a few
    listdirs. ``one_by_one``: a layout of many small folders (CheXpert's 187,641 study folders, MIMIC's) checks
    each named file on its own instead (one stat), so that a split costs what its own images cost."""

    def __init__(self, one_by_one: bool = False) -> None:
        self._seen: dict[str, set[str]] = {}
        self.one_by_one = one_by_one

    def exists(self, path: Path | str) -> bool:
        path = os.fspath(path)
        if self.one_by_one:
            try:
                os.stat(path)
            except (OSError, ValueError):
                return False
            return True
        folder, name = os.path.split(path)
        names = self._seen.get(folder)
        if names is None:
            try:
                names = set(os.listdir(folder or "."))
            except OSError:
                names = set()
            self._seen[folder] = names
        return name in names

    def locate(self, folder: Path, rel: str, origin: str, report: Problems) -> str | None:
        """The image (its path) that a list or CSV row (at ``origin``) names as ``rel`` below ``folder``; None,
        reported, when the name leaves the dataset root (absolute, ``~``, ``..``) or the file is missing."""
        if _plain(rel):  # the path ``safe_join`` gives, without building Paths for each of 200k rows
            path = f"{folder}/{rel}"
        else:
            try:
                path = str(safe_join(folder, rel, origin))
            except BenchxferError as err:
                report(str(err))
                return None
        if self.exists(path):
            return path
        report(f"{origin}: image {path} is missing")
        return None


def _plain(rel: str) -> bool:
    """A relative path with nothing for ``safe_join`` to refuse or ``Path`` to tidy: no surrounding space, no
    leading ``/``, ``~`` or ``./``, no ``..``, ``.`` or empty part."""
    return (bool(rel) and rel == rel.strip() and rel[0] not in "/~." and rel[-1] not in "/." and "//" not in rel
            and "/." not in rel and "\\" not in rel)


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
    """Rows of a CSV with their line numbers, each a dict of the ``required`` columns only (:func:`csv_tuples`)."""
    for lineno, cells in csv_tuples(path, required):
        yield lineno, dict(zip(required, cells))


def csv_tuples(path: Path, required: tuple[str, ...]) -> Iterator[tuple[int, tuple[str, ...]]]:
    """Rows of a CSV with their line numbers, each the tuple of its ``required`` cells (stripped), in that order;
    the other columns are never kept (PadChest's report text is most of its file). Column names are stripped (a
    BOM too); missing columns are an error; blank lines are skipped. The file is read as a stream (``.gz``
    decompressed on the way), so a 100 MB label file never sits in memory whole."""
    if not path.exists() and not path.is_symlink() and Path(f"{path}.gz").exists():
        path = Path(f"{path}.gz")
    try:
        handle = gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb")
    except OSError as err:
        raise open_problem(path, err, "CSV file") from None
    with handle:
        reader = csv.reader(io.TextIOWrapper(handle, encoding="utf-8-sig", newline=""))
        try:
            yield from _tuples(path, reader, required)
        except UnicodeDecodeError:
            utf8_text(path, _raw(path), "a CSV file")  # raises the one line: the file, line and byte
            raise
        except (EOFError, gzip.BadGzipFile, zlib.error) as err:
            kind = "ends early (truncated)" if isinstance(err, EOFError) else f"is damaged ({err})"
            raise BenchxferError(f"{path}: the compressed file {kind}; download or copy it again") from None
        except csv.Error as err:
            raise BenchxferError(f"{where(path, reader.line_num)}: not a CSV row ({err})") from None
        except OSError as err:
            raise open_problem(path, err, "CSV file") from None


def _raw(path: Path) -> bytes:
    with gzip.open(path, "rb") if path.suffix == ".gz" else open(path, "rb") as fh:
        return fh.read()


def _tuples(path: Path, reader: Any, required: tuple[str, ...]) -> Iterator[tuple[int, tuple[str, ...]]]:
    try:
        header = [h.strip() for h in next(reader)]
    except StopIteration:
        raise BenchxferError(f"{path}: CSV file is empty") from None
    missing = [c for c in required if c not in header]
    if missing:
        raise BenchxferError(f"{where(path, 1)}: missing column(s) {', '.join(missing)}; found {', '.join(header)}")
    columns = [header.index(c) for c in required]
    first = columns[0]
    take = itemgetter(*columns) if len(columns) > 1 else (lambda row: (row[first],))
    width = len(header)
    strip = str.strip
    for row in reader:
        if len(row) != width or not row[first].strip():  # perhaps a blank line, or one of commas and spaces
            if not "".join(row).strip():
                continue
            if len(row) != width:
                raise BenchxferError(f"{where(path, reader.line_num)}: {len(row)} cells, the header has {width}")
        yield reader.line_num, tuple(map(strip, take(row)))
