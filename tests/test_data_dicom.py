"""DICOM pixels: 8-bit unchanged; wider ones through the modality LUT and the header's VOI window."""

from pathlib import Path

import numpy as np
import pytest
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import (
    ExplicitVRLittleEndian,
    SecondaryCaptureImageStorage,
    generate_uid,
)

from benchxfer.data.imageio import decode_image

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
