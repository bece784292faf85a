"""Decoding images and masks as distributed (PNG/JPEG/TIFF/GIF, 16-bit PNG, DICOM) and path safety.

Every decoder returns ``uint8`` arrays: images H x W x C with C = 1 (grayscale) or 3 (colour),
masks H x W with values {0, 1}. A file that cannot be decoded is a :class:`BenchxferError` naming it.
"""

from __future__ import annotations

import os
import warnings
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


# What pydicom's ``pixel_array`` gives as RGB: its own conversion of YBR_FULL(_422), the JPEG 2000 decoder's of
# YBR_ICT / YBR_RCT
_DICOM_COLOUR = ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT")
_DICOM_GREY = ("MONOCHROME1", "MONOCHROME2")
_DICOM_READ = _DICOM_GREY + _DICOM_COLOUR + ("PALETTE COLOR",)
_DICOM_PIXEL_MODULE = ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
                       "PhotometricInterpretation")


def decode_dicom(path: str | Path, window: tuple[float, float] | None = None) -> np.ndarray:
    """A single-frame DICOM image as uint8 H x W x C (docs/datasets.md, "DICOM pixels").

    pydicom decodes (compressed syntaxes through the pylibjpeg plugins). Grey: 8-bit unsigned pixels pass through
    unchanged (as the studies read SIIM's 8-bit files); others (1, 16, 32 bits, signed 8) go through pydicom's
    ``apply_modality_lut`` then ``apply_voi_lut`` (the window or VOI LUT of the header), and the VOI output range
    (:func:`_voi_range`) is mapped onto 0-255 -- never a per-image min-max stretch; grey wider than 16 bits needs
    a window. ``window`` = (centre, width) replaces the header's (CT, e.g. the PE window). MONOCHROME1 is
    inverted. Colour (RGB, YBR_*: pydicom's RGB) and PALETTE COLOR (pydicom's ``apply_color_lut``): the stored or
    the palette's range mapped onto 0-255, three channels. Anything else -- no pixel data, several frames, another
    photometric interpretation, a file pydicom cannot parse or decode -- is one :class:`BenchxferError` line.
    """
    path = str(path)
    ds = _read_dicom(path)
    if "PixelData" not in ds:
        raise BenchxferError(f"{path}: DICOM file holds no image (no Pixel Data element)")
    missing = [k for k in _DICOM_PIXEL_MODULE if k not in ds]
    if missing:
        raise BenchxferError(f"{path}: DICOM header lacks {', '.join(missing)}, which its pixel data needs")
    frames, rows, columns, samples = (_header_int(path, ds, k) for k in ("NumberOfFrames", "Rows", "Columns",
                                                                        "SamplesPerPixel"))
    photometric = str(ds.PhotometricInterpretation).strip()
    if frames > 1:
        raise BenchxferError(f"{path}: multi-frame DICOM ({frames} frames); benchxfer reads single-frame images only")
    if photometric not in _DICOM_READ:
        raise BenchxferError(f"{path}: DICOM photometric interpretation {photometric!r} is not read (read: "
                             f"{', '.join(_DICOM_READ)})")
    if photometric not in _DICOM_GREY and int(ds.get("PixelRepresentation", 0)) != 0:
        raise BenchxferError(f"{path}: DICOM colour pixels ({photometric}) are signed (Pixel Representation 1)")
    if window is not None and photometric not in _DICOM_GREY:
        raise BenchxferError(f"{path}: a window applies to grey images, and this DICOM is {photometric}")
    try:
        raw = ds.pixel_array
    except Exception as err:  # noqa: BLE001 - pydicom and its decoders raise many types for broken pixel data
        syntax = getattr(getattr(ds, "file_meta", None), "TransferSyntaxUID", None)
        name = getattr(syntax, "name", None) or "no transfer syntax"
        raise BenchxferError(f"{path}: DICOM pixel data cannot be decoded ({name}; {type(err).__name__}: "
                             f"{err})") from None
    want = (rows, columns) if samples == 1 else (rows, columns, samples)
    if raw.shape != want:
        raise BenchxferError(f"{path}: DICOM pixels decode to shape {raw.shape}, its header says {want}")
    try:
        if photometric == "PALETTE COLOR":
            from pydicom.pixels import apply_color_lut

            out = _range_to_uint8(apply_color_lut(raw, ds)[..., :3])  # an alpha LUT's 4th channel dropped
        elif photometric in _DICOM_COLOUR:
            out = _range_to_uint8(raw, int(ds.BitsStored))
        else:
            out = _grey_dicom(path, ds, raw, window)
    except BenchxferError:
        raise
    except Exception as err:  # noqa: BLE001 - a damaged LUT or window in the header
        raise BenchxferError(f"{path}: DICOM lookup table or window cannot be applied ({type(err).__name__}: "
                             f"{err})") from None
    return np.ascontiguousarray(out[:, :, None] if out.ndim == 2 else out)


def _read_dicom(path: str):
    import pydicom

    try:
        return pydicom.dcmread(path)
    except FileNotFoundError:
        raise BenchxferError(f"{path}: DICOM file is missing") from None
    except pydicom.errors.InvalidDicomError:
        raise BenchxferError(f"{path}: not a DICOM file (no File Meta Information with the 'DICM' prefix, as "
                             "DICOM PS3.10 files have)") from None
    except Exception as err:  # noqa: BLE001 - pydicom raises many types for broken files
        raise BenchxferError(f"{path}: unreadable DICOM ({type(err).__name__}: {err})") from None


def _header_int(path: str, ds, keyword: str) -> int:
    """An integer element of the header; 1 when absent or empty (Number of Frames, Samples per Pixel)."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # pydicom warns of the bad value it then raises on
            value = ds.get(keyword)
        return 1 if value is None or value == "" else int(value)
    except (TypeError, ValueError) as err:
        raise BenchxferError(f"{path}: DICOM header element {keyword} is not an integer ({err})") from None


def _range_to_uint8(arr: np.ndarray, bits: int | None = None) -> np.ndarray:
    """Unsigned values of ``bits`` bits (default: the dtype's) onto 0-255: ``round(v * 255 / (2**bits - 1))``;
    8-bit values unchanged."""
    if arr.dtype == np.uint8:
        return arr
    bits = bits or arr.dtype.itemsize * 8
    return np.floor(arr.astype(np.float64) * (255.0 / (2.0**bits - 1)) + 0.5).astype(np.uint8)


def _grey_dicom(path: str, ds, raw: np.ndarray, window: tuple[float, float] | None) -> np.ndarray:
    from pydicom.pixels import apply_modality_lut, apply_voi_lut

    if raw.dtype == np.uint8 and int(ds.BitsAllocated) == 8 and window is None:
        out = raw
    else:
        arr = apply_modality_lut(raw, ds).astype(np.float64)
        if window is not None:
            centre, width = window
            arr = np.clip((arr - (centre - width / 2)) / width, 0.0, 1.0) * 255.0
            out = (arr + 0.5).astype(np.uint8)
        else:
            if int(ds.BitsStored) > 16 and "VOILUTSequence" not in ds and "WindowCenter" not in ds:
                raise BenchxferError(f"{path}: {int(ds.BitsStored)}-bit grey DICOM without a window (Window "
                                     "Center/Width or a VOI LUT) to map onto 0-255; grey wider than 16 bits is "
                                     "read only through one")
            arr = np.asarray(apply_voi_lut(arr, ds), np.float64)
            lo, hi = _voi_range(ds)
            if not hi > lo:
                raise BenchxferError(f"{path}: DICOM header gives an empty output range ({lo:g} .. {hi:g}; Bits "
                                     "Stored, the rescale or a LUT descriptor)")
            out = (np.clip((arr - lo) / (hi - lo), 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)
    if ds.PhotometricInterpretation == "MONOCHROME1":
        out = 255 - out
    return out


def _voi_range(ds) -> tuple[float, float]:
    """The output range of the header's VOI step, as pydicom's ``apply_voi_lut`` makes it (DICOM PS3.3
    C.11.2.1.2): a VOI LUT's entries; else a Modality LUT's entries; else the stored bits' range, through the
    rescale."""
    if "VOILUTSequence" in ds:
        return 0.0, float(2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1)
    if "ModalityLUTSequence" in ds:
        return 0.0, float(2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1)
    bits = int(ds.BitsStored)
    lo, hi = (0.0, 2.0 ** bits - 1) if int(ds.PixelRepresentation) == 0 else (-(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1)
    slope, intercept = ds.get("RescaleSlope"), ds.get("RescaleIntercept")
    if slope is not None and intercept is not None:
        lo, hi = lo * float(slope) + float(intercept), hi * float(slope) + float(intercept)
    return min(lo, hi), max(lo, hi)


def decode_mask(path: str | Path) -> np.ndarray:
    """A mask file (PNG/GIF/TIFF) as uint8 {0, 1} H x W: any non-zero pixel is foreground."""
    arr = decode_image(path)
    return (arr.max(axis=2) > 0).astype(np.uint8)


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
