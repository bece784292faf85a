"""DICOM pixels (docs/datasets.md): 8-bit grey unchanged; wider grey through the modality LUT and the header's VOI
window; colour and palettes by their range; every file of pydicom's test folders read by that rule or refused in
one line, by the reader, the torch Dataset and `data verify`."""

import functools
import importlib.util
import warnings
from pathlib import Path

import numpy as np
import pydicom
import pytest
import torch
from click.testing import CliRunner
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.errors import InvalidDicomError
from pydicom.pixels import apply_color_lut, apply_modality_lut, apply_voi_lut
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from benchxfer.cli import main
from benchxfer.data import open_dataset
from benchxfer.data.imageio import decode_dicom, decode_image
from benchxfer.errors import BenchxferError

pytestmark = pytest.mark.fast


def _write(path: Path, arr: np.ndarray, bits_stored: int, **tags) -> Path:
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = uid = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID, ds.SOPInstanceUID, ds.Modality = SecondaryCaptureImageStorage, uid, "CR"
    ds.Rows, ds.Columns = arr.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation, ds.PixelRepresentation = 1, "MONOCHROME2", 0
    ds.BitsAllocated = arr.dtype.itemsize * 8
    ds.BitsStored, ds.HighBit = bits_stored, bits_stored - 1
    for key, value in tags.items():
        setattr(ds, key, value)
    ds.PixelData = np.ascontiguousarray(arr).tobytes()
    ds.save_as(str(path), enforce_file_format=True)
    return path


def test_8bit_passes_unchanged(tmp_path):
    arr = np.arange(60, dtype=np.uint8).reshape(6, 10) * 3 + 40  # 40..217: a min-max stretch would change it
    out = decode_image(_write(tmp_path / "a.dcm", arr, 8))
    assert out.shape == (6, 10, 1)
    np.testing.assert_array_equal(out[:, :, 0], arr)


def test_wide_pixels_use_modality_then_voi_window(tmp_path):
    raw = np.array([[0, 500, 1000, 1500], [2000, 2500, 3000, 4095]], np.uint16)
    slope, intercept, centre, width = 2.0, -100.0, 2900.0, 2000.0
    path = _write(tmp_path / "b.dcm", raw, 12, RescaleSlope=slope, RescaleIntercept=intercept,
                  WindowCenter=centre, WindowWidth=width)
    # DICOM PS3.3 C.11.2.1.2 linear window on the modality values, output range = the stored range
    # 0..4095 through the rescale (-100 .. 8090), then mapped onto 0..255
    x = raw * slope + intercept
    y_min, y_max = 0 * slope + intercept, 4095 * slope + intercept
    lin = ((x - (centre - 0.5)) / (width - 1) + 0.5) * (y_max - y_min) + y_min
    y = np.where(x <= centre - 0.5 - (width - 1) / 2, y_min, np.where(x > centre - 0.5 + (width - 1) / 2, y_max, lin))
    expected = np.floor((y - y_min) / (y_max - y_min) * 255 + 0.5).astype(np.uint8)
    out = decode_image(path)[:, :, 0]
    np.testing.assert_array_equal(out, expected)
    # a per-image min-max stretch would give 0..255 over 0..4095, e.g. 500 -> 31; the window gives 0
    assert out[0, 1] == 0 and out[1, 3] == 255


def test_wide_pixels_without_a_window_keep_the_stored_range(tmp_path):
    raw = np.array([[1000, 1100], [1200, 1300]], np.uint16)
    out = decode_image(_write(tmp_path / "c.dcm", raw, 12))[:, :, 0]
    np.testing.assert_array_equal(out, np.floor(raw / 4095 * 255 + 0.5).astype(np.uint8))
    assert out.max() < 100  # not stretched to 255


# --- every file of pydicom's test folders -----------------------------------------------------------------------


def _real_files() -> list[tuple[str, Path]]:
    """Every file in pydicom's ``data/test_files`` and in pydicom-data's folder (the test extra installs it), by an
    id that names it. Listed from the folders, never through ``get_testdata_files`` (which downloads)."""
    roots = [("pydicom", Path(pydicom.__file__).parent / "data" / "test_files")]
    spec = importlib.util.find_spec("data_store")  # the package pydicom-data installs
    if spec is not None and spec.origin:
        roots.append(("pydicom-data", Path(spec.origin).parent / "data"))
    return [(f"{name}/{p.relative_to(root).as_posix()}", p)
            for name, root in roots for p in sorted(root.rglob("*")) if p.is_file()]


REAL = _real_files()


@functools.lru_cache(maxsize=None)
def _rule(path: Path) -> np.ndarray | str:
    """What docs/datasets.md ("DICOM pixels") says ``path`` gives: uint8 H x W x C from pydicom's own decode
    through the documented mapping, or the reason it is refused (words its one line holds)."""
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pydicom's warnings about the broken files
        try:
            ds = pydicom.dcmread(path)
        except InvalidDicomError:
            return "not a DICOM file"
        if "PixelData" not in ds:
            return "holds no image"
        if any(k not in ds for k in ("Rows", "Columns", "BitsAllocated", "BitsStored", "PixelRepresentation",
                                     "PhotometricInterpretation")):
            return "DICOM header lacks"
        try:
            frames = int(ds.get("NumberOfFrames") or 1)
        except ValueError:
            return "NumberOfFrames is not an integer"
        if frames > 1:
            return f"multi-frame DICOM ({frames} frames)"
        try:
            raw = ds.pixel_array
        except Exception:  # noqa: BLE001 - whatever pydicom's decoders raise
            return "pixel data cannot be decoded"
    kind, bits = ds.PhotometricInterpretation, int(ds.BitsStored)
    if kind == "PALETTE COLOR":  # the palette's entries (LUT Descriptor's 3rd value: bits) onto 0-255
        rgb = apply_color_lut(raw, ds).astype(np.float64)
        depth = int(ds.RedPaletteColorLookupTableDescriptor[2])
        return np.floor(rgb * 255 / (2**depth - 1) + 0.5).astype(np.uint8)
    if kind in ("RGB", "YBR_FULL", "YBR_FULL_422", "YBR_ICT", "YBR_RCT"):  # pydicom's RGB, stored range onto 0-255
        return np.floor(raw.astype(np.float64) * 255 / (2**bits - 1) + 0.5).astype(np.uint8)
    assert kind in ("MONOCHROME1", "MONOCHROME2"), kind  # no other photometric among the files
    if raw.dtype == np.uint8 and int(ds.BitsAllocated) == 8:
        grey = raw  # 8-bit unsigned: as stored
    elif bits > 16 and "WindowCenter" not in ds and "VOILUTSequence" not in ds:
        return f"{bits}-bit grey DICOM without a window"
    else:
        # PS3.3 C.11: the modality LUT (or rescale), then the VOI LUT (or window), whose output spans a VOI LUT's
        # entries, else a modality LUT's, else the stored range through the rescale; that span onto 0-255
        y = np.asarray(apply_voi_lut(apply_modality_lut(raw, ds), ds), np.float64)
        if "VOILUTSequence" in ds:
            lo, hi = 0, 2 ** int(ds.VOILUTSequence[0].LUTDescriptor[2]) - 1
        elif "ModalityLUTSequence" in ds:
            lo, hi = 0, 2 ** int(ds.ModalityLUTSequence[0].LUTDescriptor[2]) - 1
        else:
            lo, hi = (0, 2**bits - 1) if ds.PixelRepresentation == 0 else (-(2 ** (bits - 1)), 2 ** (bits - 1) - 1)
            if "RescaleSlope" in ds:
                lo, hi = sorted((lo * float(ds.RescaleSlope) + float(ds.RescaleIntercept),
                                 hi * float(ds.RescaleSlope) + float(ds.RescaleIntercept)))
        grey = np.floor(np.clip((y - lo) / (hi - lo), 0, 1) * 255 + 0.5).astype(np.uint8)
    if kind == "MONOCHROME1":
        grey = 255 - grey
    return grey[:, :, None]


def _assert_one_line(err: BenchxferError, path: Path, reason: str) -> None:
    text = str(err)
    assert "\n" not in text and text.startswith(f"{path}: ") and reason in text, text


def test_the_real_files_are_all_there():
    names = {name for name, _ in REAL}
    assert len(REAL) >= 244, len(REAL)  # pydicom 3.0.2: 176 files, pydicom-data 1.0.0: 68
    assert {"pydicom/CT_small.dcm", "pydicom-data/JPEG-LL.dcm", "pydicom-data/OBXXXX1A.dcm"} <= names


@pytest.mark.parametrize("path", [p for _, p in REAL], ids=[name for name, _ in REAL])
def test_every_real_file_is_read_by_the_rule_or_refused_in_one_line(path):
    expected = _rule(path)
    if isinstance(expected, str):
        with pytest.raises(BenchxferError) as err:
            decode_dicom(path)
        _assert_one_line(err.value, path, expected)
    else:
        out = decode_dicom(path)
        assert out.dtype == np.uint8 and out.flags.c_contiguous
        np.testing.assert_array_equal(out, expected)


def test_the_kinds_the_issue_names(tmp_path):
    """What the rule gives, spelled out on the files issue 30 names."""
    files = dict(REAL)
    # JPEG Lossless (process 14), JPEG-LS, 12-bit JPEG and JPEG 2000 decode (pylibjpeg's plugins)
    for name in ("pydicom-data/JPEG-LL.dcm", "pydicom-data/JPGLosslessP14SV1_1s_1f_8b.dcm",
                 "pydicom/MR_small_jpeg_ls_lossless.dcm", "pydicom/JPGExtended.dcm", "pydicom/JPEG2000.dcm"):
        assert decode_dicom(files[name]).shape[2] == 1
    # lossless syntaxes give the uncompressed file's pixels
    np.testing.assert_array_equal(decode_dicom(files["pydicom/MR_small_jpeg_ls_lossless.dcm"]),
                                  decode_dicom(files["pydicom/MR_small.dcm"]))
    # 1-bit: 0 and 255, where the stored bits are 0 and 1
    raw = pydicom.dcmread(files["pydicom/liver_1frame.dcm"]).pixel_array
    out = decode_dicom(files["pydicom/liver_1frame.dcm"])[:, :, 0]
    assert set(np.unique(raw)) == {0, 1} and set(np.unique(out)) == {0, 255}
    np.testing.assert_array_equal(out, raw * 255)
    # PALETTE COLOR: the red, green and blue entries of each pixel's index (16-bit entries, read from the bytes)
    ds = pydicom.dcmread(files["pydicom-data/OBXXXX1A.dcm"])
    lut = [np.frombuffer(ds[f"{c}PaletteColorLookupTableData"].value, "<u2") for c in ("Red", "Green", "Blue")]
    index = ds.pixel_array
    out = decode_dicom(files["pydicom-data/OBXXXX1A.dcm"])
    assert out.shape == index.shape + (3,)
    for c in range(3):
        np.testing.assert_array_equal(out[:, :, c], np.round(lut[c][index] / 257).astype(np.uint8))
    assert len(np.unique(out.reshape(-1, 3), axis=0)) > 100  # colours, not grey indices
    # multi-frame, grey and colour: refused, not read frames-as-rows
    for name, frames in (("pydicom-data/emri_small.dcm", 10), ("pydicom/SC_rgb_rle_2frame.dcm", 2)):
        with pytest.raises(BenchxferError) as err:
            decode_dicom(files[name])
        _assert_one_line(err.value, files[name], f"multi-frame DICOM ({frames} frames)")


def test_8bit_monochrome1_is_inverted(tmp_path):
    arr = np.arange(60, dtype=np.uint8).reshape(6, 10) * 3 + 40
    out = decode_image(_write(tmp_path / "m1.dcm", arr, 8, PhotometricInterpretation="MONOCHROME1"))
    np.testing.assert_array_equal(out[:, :, 0], 255 - arr)


def test_32bit_grey_reads_through_its_window_and_is_refused_without_one(tmp_path):
    raw = np.array([[0, 1_000_000], [1_500_000, 3_000_000]], np.uint32)
    path = _write(tmp_path / "w.dcm", raw, 32, WindowCenter=1_500_000, WindowWidth=1_000_001)
    # PS3.3 C.11.2.1.2.1: x <= c - 0.5 - (w-1)/2 = 999_999.5 gives the output range's minimum, x > 1_999_999.5 its
    # maximum, between: ((x - (c - 0.5)) / (w-1) + 0.5) of the range: 1_000_000 -> 0.0000005, 1_500_000 -> 0.5000005;
    # that fraction of 0-255, rounded
    np.testing.assert_array_equal(decode_image(path)[:, :, 0], [[0, 0], [128, 255]])
    with pytest.raises(BenchxferError) as err:
        decode_image(_write(tmp_path / "n.dcm", raw, 32))
    _assert_one_line(err.value, tmp_path / "n.dcm", "32-bit grey DICOM without a window")


@pytest.mark.parametrize("change, reason", [
    ({"PhotometricInterpretation": "ARGB"}, "photometric interpretation 'ARGB' is not read"),
    ({"PixelRepresentation": 1}, "are signed"),
])
def test_colour_that_is_not_read_is_refused(tmp_path, change, reason):
    ds = pydicom.dcmread(dict(REAL)["pydicom/SC_rgb_rle_16bit.dcm"])
    for key, value in change.items():
        setattr(ds, key, value)
    ds.save_as(tmp_path / "c.dcm")
    with pytest.raises(BenchxferError) as err:
        decode_dicom(tmp_path / "c.dcm")
    _assert_one_line(err.value, tmp_path / "c.dcm", reason)


def test_a_rescale_to_one_value_is_refused(tmp_path):
    path = _write(tmp_path / "s.dcm", np.array([[0, 4095]], np.uint16), 12, RescaleSlope=0, RescaleIntercept=5)
    with pytest.raises(BenchxferError) as err:
        decode_image(path)
    _assert_one_line(err.value, path, "empty output range (5 .. 5;")


def test_a_window_on_colour_and_a_missing_file_are_refused(tmp_path):
    path = dict(REAL)["pydicom/ExplVR_BigEnd.dcm"]  # RGB
    with pytest.raises(BenchxferError) as err:
        decode_dicom(path, window=(100, 700))
    _assert_one_line(err.value, path, "a window applies to grey images")
    with pytest.raises(BenchxferError) as err:
        decode_image(tmp_path / "gone.dcm")
    _assert_one_line(err.value, tmp_path / "gone.dcm", "DICOM file is missing")

# --- through the torch Dataset and `data verify` -----------------------------------------------------------------


@pytest.fixture(scope="module")
def dicom_folder(tmp_path_factory):
    """An image folder (one class) holding, as ``<id>.dcm`` links, every real file the rule refuses and every one it
    reads of up to 512 x 512 pixels (the 15 larger ones, up to 1955 x 1841, only slow the test down: the reader's
    test above reads them)."""
    root = tmp_path_factory.mktemp("dicomfolder")
    folder = root / "train" / "a"
    folder.mkdir(parents=True)
    links = {}
    for name, path in REAL:
        expected = _rule(path)
        if not isinstance(expected, str) and expected.shape[0] * expected.shape[1] > 512 * 512:
            continue
        link = folder / (name.replace("/", "__") + ".dcm")
        link.symlink_to(path)
        links[link] = path
    return root, links


def test_every_real_file_through_the_dataset(dicom_folder):
    root, links = dicom_folder
    ds = open_dataset("imagefolder", root, "train")
    assert len(ds) == len(links)
    read = 0
    for i in range(len(ds)):
        link = Path(ds.records[int(ds.indices[i])].image)
        expected = _rule(links[link])
        if isinstance(expected, str):
            with pytest.raises(BenchxferError) as err:
                ds[i]
            _assert_one_line(err.value, link, expected)
            continue
        image, _ = ds[i]
        want = torch.from_numpy(expected).permute(2, 0, 1).float() / 255
        torch.testing.assert_close(image, want.expand(3, -1, -1), rtol=0, atol=0)
        read += 1
    assert read >= 100


def test_data_verify_names_every_refused_file(dicom_folder):
    root, links = dicom_folder
    result = CliRunner().invoke(main, ["data", "verify", "imagefolder", "--root", str(root), "--all"])
    assert result.exit_code == 1 and "Traceback" not in result.output
    lines = result.output.splitlines()
    refused = {link for link, path in links.items() if isinstance(_rule(path), str)}
    for link in links:
        naming = [ln for ln in lines if f"{link}:" in ln and not ln.startswith("Error:")]
        assert len(naming) == (1 if link in refused else 0), (link, naming)
