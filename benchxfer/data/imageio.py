"""Decoding images and masks as distributed (PNG/JPEG/TIFF/GIF, 16-bit PNG, DICOM) and path safety.

Every decoder returns ``uint8`` arrays: images H x W x C with C = 1 (grayscale) or 3 (colour),
masks H x W with values {0, 1}. A file that cannot be decoded is a :class:`BenchxferError` naming it.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
from PIL import Image

from benchxfer.errors import BenchxferError

_GRAY_MODES = {"L", "LA", "1", "I", "I;16", "I;16B", "I;16L", "I;16N", "F"}


def safe_join(root: Path, rel: str, origin: str) -> Path:
    """``root / rel``, refusing absolute paths and any ``..`` that leaves ``root``."""
    rel = rel.strip()
    if not rel or os.path.isabs(rel) or rel.startswith("~"):
        raise BenchxferError(f"{origin}: path {rel!r} must be relative to the dataset root {root}")
    parts = Path(rel).parts
    if ".." in parts:
        raise BenchxferError(f"{origin}: path {rel!r} escapes the dataset root {root} ('..' is not allowed)")
    return root / rel


def to_uint8(arr: np.ndarray) -> np.ndarray:
    """Scale any numeric array to uint8: 8-bit passes through, wider ranges are min-max scaled."""
    if arr.dtype == np.uint8:
        return arr
    arr = arr.astype(np.float32)
    lo, hi = float(arr.min()), float(arr.max())
    if hi <= lo:
        return np.zeros(arr.shape, np.uint8)
    return ((arr - lo) * (255.0 / (hi - lo)) + 0.5).astype(np.uint8)


def _from_pil(img: Image.Image) -> np.ndarray:
    if img.mode in _GRAY_MODES:
        if img.mode in ("LA", "1"):
            img = img.convert("L")
        arr = to_uint8(np.asarray(img))
        return arr[:, :, None]
    if img.mode != "RGB":
        img = img.convert("RGB")  # RGBA (alpha dropped), P, CMYK, YCbCr
    arr = np.asarray(img)
    if (arr[:, :, 0] == arr[:, :, 1]).all() and (arr[:, :, 1] == arr[:, :, 2]).all():
        return np.ascontiguousarray(arr[:, :, :1])  # grey stored as RGB(A): keep one channel
    return arr


def decode_image(path: str | Path, window: tuple[float, float] | None = None) -> np.ndarray:
    """Decode ``path`` to uint8 H x W x C (C in {1, 3}). ``window`` = (centre, width) for CT DICOM."""
    path = str(path)
    if path.lower().endswith(".dcm"):
        return decode_dicom(path, window)
    try:
        with Image.open(path) as img:
            img.load()
            return _from_pil(img)
    except FileNotFoundError:
        raise BenchxferError(f"{path}: image file is missing") from None
    except (OSError, SyntaxError, ValueError) as err:
        raise BenchxferError(f"{path}: unreadable or truncated image ({err})") from None


def decode_dicom(path: str | Path, window: tuple[float, float] | None = None) -> np.ndarray:
    import pydicom

    try:
        ds = pydicom.dcmread(str(path))
        arr = ds.pixel_array.astype(np.float32)
    except FileNotFoundError:
        raise BenchxferError(f"{path}: DICOM file is missing") from None
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for broken files
        raise BenchxferError(f"{path}: unreadable DICOM ({type(err).__name__}: {err})") from None
    arr = arr * float(getattr(ds, "RescaleSlope", 1) or 1) + float(getattr(ds, "RescaleIntercept", 0) or 0)
    if window is not None:
        centre, width = window
        arr = np.clip((arr - (centre - width / 2)) / width, 0.0, 1.0) * 255.0
        out = (arr + 0.5).astype(np.uint8)
    else:
        out = to_uint8(arr)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        out = 255 - out
    return out[:, :, None] if out.ndim == 2 else out


def decode_mask(path: str | Path) -> np.ndarray:
    """A mask file (PNG/GIF/TIFF) as uint8 {0, 1} H x W: any non-zero pixel is foreground."""
    arr = decode_image(path)
    return (arr.max(axis=2) > 0).astype(np.uint8)


def image_size(path: str | Path) -> tuple[int, int]:
    """(height, width) from the header only."""
    path = str(path)
    if path.lower().endswith(".dcm"):
        import pydicom

        ds = pydicom.dcmread(path, stop_before_pixels=True)
        return int(ds.Rows), int(ds.Columns)
    with Image.open(path) as img:
        return img.height, img.width


def rle_decode(rle: str, height: int, width: int, origin: str) -> np.ndarray:
    """SIIM-ACR run-length string (relative starts, column-major) to a uint8 {0,1} H x W mask.

    ``"-1"`` is an empty mask. This is the competition's ``rle2mask(rle, width, height).T``.
    """
    rle = rle.strip()
    flat = np.zeros(height * width, np.uint8)
    if rle in ("-1", ""):
        return flat.reshape(height, width)
    try:
        nums = np.asarray([int(x) for x in rle.split()], dtype=np.int64)
    except ValueError:
        raise BenchxferError(f"{origin}: EncodedPixels must be '-1' or integer pairs, got {rle[:40]!r}") from None
    if nums.size % 2 or (nums < 0).any():
        raise BenchxferError(f"{origin}: EncodedPixels must be non-negative (start, length) pairs")
    pos = 0
    for start, length in zip(nums[0::2], nums[1::2]):
        pos += int(start)
        if pos + int(length) > flat.size:
            raise BenchxferError(
                f"{origin}: run-length string runs past the image ({pos + int(length)} > {height}x{width} pixels)"
            )
        flat[pos : pos + int(length)] = 1
        pos += int(length)
    return flat.reshape(width, height).T.copy()


def rle_encode(mask: np.ndarray) -> str:
    """Inverse of :func:`rle_decode` (the competition's ``mask2rle`` on ``mask.T``); '-1' when empty."""
    flat = (mask.T.reshape(-1) > 0).astype(np.int8)
    if not flat.any():
        return "-1"
    padded = np.concatenate([[0], flat, [0]])
    changes = np.flatnonzero(padded[1:] != padded[:-1])
    starts, ends = changes[0::2], changes[1::2]
    out, prev_end = [], 0
    for s, e in zip(starts, ends):
        out += [int(s - prev_end), int(e - s)]
        prev_end = e
    return " ".join(map(str, out))


def read_lines(path: Path) -> list[tuple[int, str]]:
    """Non-blank, non-comment lines with their 1-based numbers (a byte-order mark at the start is dropped)."""
    try:
        text = path.read_text(encoding="utf-8-sig")
    except FileNotFoundError:
        raise BenchxferError(f"{path}: list file is missing") from None
    except IsADirectoryError:
        raise BenchxferError(f"{path}: is a folder, not a list file") from None
    except PermissionError:
        raise BenchxferError(f"{path}: cannot read the list file (permission denied)") from None
    except UnicodeDecodeError:
        raise BenchxferError(f"{path}: list file is not text") from None
    return [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.startswith("#")]
