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
from benchxfer.textfile import open_problem, utf8_text

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
    """A DICOM image as uint8 H x W x C.

    8-bit pixels pass through unchanged (as the studies read SIIM's 8-bit files). Wider ones go through
    pydicom's ``apply_modality_lut`` then ``apply_voi_lut`` (the window or VOI LUT of the header), and the
    VOI output range (the stored range through the modality rescale, as pydicom's windowing uses) is mapped
    onto 0-255 -- never a per-image min-max stretch. ``window`` = (centre, width) replaces the header's
    (CT, e.g. the PE window). MONOCHROME1 is inverted after a window.
    """
    import pydicom
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    try:
        ds = pydicom.dcmread(str(path))
        raw = ds.pixel_array
    except FileNotFoundError:
        raise BenchxferError(f"{path}: DICOM file is missing") from None
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for broken files
        raise BenchxferError(f"{path}: unreadable DICOM ({type(err).__name__}: {err})") from None
    if raw.dtype == np.uint8 and window is None:
        return raw[:, :, None] if raw.ndim == 2 else raw
    arr = apply_modality_lut(raw, ds).astype(np.float64)
    if window is not None:
        centre, width = window
        arr = np.clip((arr - (centre - width / 2)) / width, 0.0, 1.0) * 255.0
        out = (arr + 0.5).astype(np.uint8)
    else:
        arr = np.asarray(apply_voi_lut(arr, ds), np.float64)
        lo, hi = _voi_range(ds)
        out = (np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if getattr(ds, "PhotometricInterpretation", "") == "MONOCHROME1":
        out = 255 - out
    return out[:, :, None] if out.ndim == 2 else out


def _voi_range(ds) -> tuple[float, float]:
    """The output range of the header's VOI step: a VOI LUT's entries, else pydicom's windowing range
    (the stored bits' range, through the modality rescale)."""
    if "VOILUTSequence" in ds:
        item = ds.VOILUTSequence[0]
        return 0.0, float(2 ** int(item.LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    lo, hi = (0.0, 2.0 ** bits - 1) if int(ds.PixelRepresentation) == 0 else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None and "ModalityLUTSequence" not in ds:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return (lo, hi) if hi > lo else (hi, lo)


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
        raw = path.read_bytes()
    except OSError as err:
        raise open_problem(path, err, "list file") from None
    text = utf8_text(path, raw, "a list file")
    return [(i, ln.strip()) for i, ln in enumerate(text.splitlines(), 1) if ln.strip() and not ln.startswith("#")]
