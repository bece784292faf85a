"""The preprocessed cache: each image stored once, decoded (and resized, unless exact), read back without decoding.

Two kinds, by ``size``:

- ``original`` (:data:`ORIGINAL`), the exact cache: every image at its own size, the uint8 pixels the reader
  decodes, bit for bit (and each mask as the reader makes it). Every protocol's inputs stay the same, and a
  run reads it whenever a fresh one exists;
- a number of pixels, a lossy cache: the shorter side resized to ``size``. It changes the inputs of the study
  presets (docs/datasets.md), so runs read it only when asked (``cache_size``).

Layout, one folder per (dataset, root, split, size)::

    <cache_dir>/<name>-<hash of root>/<split>-<size>/
        images.u8      all images, uint8, H x W x C each (C = 1 for grayscale), back to back
        images.idx.npy N x 4 int64: offset, height, width, channels
        masks.u8, masks.idx.npy   the same for segmentation masks ({0, 1}, H x W)
        manifest.json  the fingerprint of the source, counts, size

A lossy cache's images are resized so that their shorter side is ``size`` (masks with nearest
neighbour), keeping the aspect ratio. Readers open the files as memory maps, so a worker touches only the bytes it reads.
The fingerprint hashes every record (paths, labels, masks) and each source file's size and mtime:
a changed, added or removed image makes the cache stale, and a stale cache is not used.
``cache_dir`` defaults to ``$BENCHXFER_HOME/cache``.
"""

from __future__ import annotations

import hashlib
import json
import os
import shutil
import warnings
from concurrent.futures import ProcessPoolExecutor
from pathlib import Path
from typing import Any, Iterable, Mapping

import numpy as np
from PIL import Image

from benchxfer.data.catalog import SPLITS, DatasetCfg, Problems, Record, get_dataset
from benchxfer.data.indexing import build_index, open_root
from benchxfer.data.pixels import record_image, record_mask
from benchxfer.errors import BenchxferError
from benchxfer.paths import home

FORMAT = 2  # also the decoders' version: 2 reads DICOM palettes, 1-bit, 8-bit MONOCHROME1 and Modality LUT ranges anew
ORIGINAL = "original"  # the size of the exact cache: each image at its own size


def cache_size(size: int | str) -> int | str:
    """``original`` or a positive number of pixels (the shorter side); anything else is one line."""
    if size == ORIGINAL:
        return ORIGINAL
    if isinstance(size, str) and size.isdigit():
        size = int(size)
    if isinstance(size, bool) or not isinstance(size, int) or size < 1:
        raise BenchxferError(f"cache size {size!r} must be {ORIGINAL!r} (exact) or a positive number of pixels")
    return size


def default_cache_dir() -> Path:
    return Path(os.environ.get("BENCHXFER_CACHE", home() / "cache")).expanduser()


def cache_path(name: str, root: Path, split: str, size: int | str, cache_dir: str | Path | None = None) -> Path:
    tag = hashlib.sha1(str(Path(root).expanduser().resolve()).encode()).hexdigest()[:12]
    return Path(cache_dir or default_cache_dir()) / f"{name}-{tag}" / f"{split}-{size}"


def _source_files(rec: Record) -> list[str]:
    return [rec.image.split("#", 1)[0], *rec.masks]


def fingerprint(records: Iterable[Record]) -> str:
    """sha1 over every record and the size + mtime of each file it reads."""
    h = hashlib.sha1(f"format={FORMAT}".encode())
    for rec in records:
        h.update(repr((rec.image, np.asarray(rec.label).tolist() if rec.label is not None else None, rec.masks, rec.rle)).encode())
        for path in _source_files(rec):
            try:
                st = os.stat(path)
                h.update(f"{st.st_size}:{st.st_mtime_ns}".encode())
            except OSError:
                h.update(b"missing")
    return h.hexdigest()


def resize_short(arr: np.ndarray, size: int, nearest: bool = False) -> np.ndarray:
    """Resize so that the shorter side is ``size`` (antialiased bilinear; nearest for masks)."""
    h, w = arr.shape[:2]
    scale = size / min(h, w)
    new = (max(1, round(w * scale)), max(1, round(h * scale)))
    if new == (w, h):
        return arr
    squeeze = arr.ndim == 3 and arr.shape[2] == 1
    img = Image.fromarray(arr[:, :, 0] if squeeze else arr)
    out = np.asarray(img.resize(new, Image.Resampling.NEAREST if nearest else Image.Resampling.BILINEAR))
    return out[:, :, None] if squeeze else out


def _prepare(args: tuple[DatasetCfg, Record, int | str]) -> tuple[np.ndarray, np.ndarray | None]:
    cfg, rec, size = args
    img = record_image(cfg, rec)
    mask = record_mask(cfg, rec, img.shape[:2]) if cfg.kind.dense else None
    if size == ORIGINAL:
        return img, mask
    return resize_short(img, size), None if mask is None else resize_short(mask, size, nearest=True)


class _Packed:
    """One packed array file + its index, written incrementally."""

    def __init__(self, folder: Path, stem: str):
        self.handle = (folder / f"{stem}.u8").open("wb")
        self.rows: list[tuple[int, int, int, int]] = []
        self.folder, self.stem, self.offset = folder, stem, 0

    def add(self, arr: np.ndarray) -> None:
        if arr.dtype != np.uint8 and not np.array_equal(arr, arr.astype(np.uint8)):
            raise BenchxferError(f"cache: {arr.dtype} pixels do not fit uint8 unchanged")
        arr = np.ascontiguousarray(arr, dtype=np.uint8)
        h, w = arr.shape[:2]
        c = arr.shape[2] if arr.ndim == 3 else 1
        self.handle.write(arr.tobytes())
        self.rows.append((self.offset, h, w, c))
        self.offset += arr.size

    def close(self) -> None:
        self.handle.close()
        np.save(self.folder / f"{self.stem}.idx.npy", np.asarray(self.rows, np.int64).reshape(-1, 4))


def write_split(cfg: DatasetCfg, root: Path, split: str, size: int | str, records: list[Record],
                cache_dir: str | Path | None = None, workers: int = 1) -> Path:
    """Write the cache of one split (atomically: a half-written cache is never read)."""
    final = cache_path(cfg.name, root, split, size, cache_dir)
    tmp = final.with_name(f"{final.name}.partial-{os.getpid()}")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    fp = fingerprint(records)
    images = _Packed(tmp, "images")
    masks = _Packed(tmp, "masks") if cfg.kind.dense else None
    jobs = [(cfg, rec, size) for rec in records]
    if workers > 1:
        with ProcessPoolExecutor(workers) as pool:
            results: Iterable = pool.map(_prepare, jobs, chunksize=16)
            for img, mask in results:
                images.add(img)
                if masks is not None:
                    masks.add(mask)
    else:
        for job in jobs:
            img, mask = _prepare(job)
            images.add(img)
            if masks is not None:
                masks.add(mask)
    images.close()
    if masks is not None:
        masks.close()
    manifest = {"format": FORMAT, "dataset": cfg.name, "root": str(root), "split": split, "size": size,
                "count": len(records), "fingerprint": fp}
    (tmp / "manifest.json").write_text(json.dumps(manifest, indent=1))
    if final.exists():
        shutil.rmtree(final)
    tmp.rename(final)
    return final


def write_cache(name: str, root: str | Path, size: int | str, splits: Iterable[str] = SPLITS, *,
                lists: Mapping[str, str | Path] | None = None, cache_dir: str | Path | None = None,
                workers: int = 1, **reader_options: Any) -> list[Path]:
    """Write the cache of ``splits`` of dataset ``name``: exact (``original``) or at ``size`` px (shorter
    side); returns the folders."""
    size = cache_size(size)
    cfg, root = open_root(name, root, reader_options)
    out = []
    for split in splits:
        index = build_index(cfg, root, split, lists, reader_options, Problems())
        if not index.records:
            raise BenchxferError(f"dataset {name!r}: split {split!r} at {root} is empty; nothing to cache")
        out.append(write_split(cfg, root, split, size, index.records, cache_dir, workers))
    return out


class CacheReader:
    """Reads images (and masks) of one cached split through memory maps, opened lazily per process."""

    def __init__(self, folder: Path):
        self.folder = folder
        self._img_idx = np.load(folder / "images.idx.npy")
        self._mask_idx = np.load(folder / "masks.idx.npy") if (folder / "masks.idx.npy").exists() else None
        self._maps: dict[str, np.memmap] = {}

    def __getstate__(self) -> dict:
        state = dict(self.__dict__)
        state["_maps"] = {}  # memory maps are reopened in each worker, never pickled
        return state

    def _map(self, stem: str) -> np.ndarray:
        m = self._maps.get(stem)
        if m is None:
            path = self.folder / f"{stem}.u8"
            m = np.memmap(path, np.uint8, "r") if path.stat().st_size else np.zeros(0, np.uint8)
            self._maps[stem] = m
        return m

    def __len__(self) -> int:
        return len(self._img_idx)

    def image(self, pos: int) -> np.ndarray:
        off, h, w, c = self._img_idx[pos]
        return self._map("images")[off : off + h * w * c].reshape(h, w, c)

    def mask(self, pos: int) -> np.ndarray:
        if self._mask_idx is None:
            raise BenchxferError(f"{self.folder}: this cache holds no masks")
        off, h, w, _c = self._mask_idx[pos]
        return self._map("masks")[off : off + h * w].reshape(h, w)


def open_cache(cfg: DatasetCfg, root: Path, split: str, size: int | str, records: list[Record], *,
               lists: Any = None, options: Any = None, cache_dir: str | Path | None = None) -> CacheReader | None:
    """The cache for (dataset, root, split, size) when it exists and matches the source; else None."""
    folder = cache_path(cfg.name, root, split, size, cache_dir)
    manifest = folder / "manifest.json"
    if not manifest.exists():
        return None
    meta = json.loads(manifest.read_text())
    if meta.get("format") != FORMAT or meta.get("count") != len(records) or meta.get("fingerprint") != fingerprint(records):
        warnings.warn(f"cache {folder} is stale (its source changed); reading the source images instead. "
                      f"Refresh it with: benchxfer data cache {cfg.name} --root {root} --size {size}", stacklevel=3)
        return None
    return CacheReader(folder)


def cache_status(name: str, root: str | Path, size: int | str, split: str, cache_dir: str | Path | None = None) -> str:
    """'fresh', 'stale' or 'missing' (for verify and the CLI)."""
    cfg = get_dataset(name)
    root = Path(root).expanduser().resolve()
    folder = cache_path(name, root, split, size, cache_dir)
    if not (folder / "manifest.json").exists():
        return "missing"
    records = build_index(cfg, root, split, None, {}, Problems()).records
    meta = json.loads((folder / "manifest.json").read_text())
    return "fresh" if meta.get("fingerprint") == fingerprint(records) else "stale"
