"""load_image and expand_inputs: formats, normalisation, DICOM, and one-line errors."""

from __future__ import annotations

import warnings

import numpy as np
import pytest
import torch
from PIL import Image

from gifsplanation import io as gio
from gifsplanation.io import ColorImageWarning, ImageLoadError, expand_inputs, load_image


def _gradient(h: int = 64, w: int = 64) -> np.ndarray:
    return np.tile(np.linspace(0, 1, w), (h, 1))


def test_8bit_png_maps_black_and_white_to_the_xrv_range(tmp_path):
    a = np.zeros((40, 40), np.uint8)
    a[:, 20:] = 255
    Image.fromarray(a).save(tmp_path / "a.png")
    x = load_image(tmp_path / "a.png", size=40)
    assert x.shape == (1, 1, 40, 40) and x.dtype == torch.float32
    assert x[0, 0, :, :15].max() == -1024 and x[0, 0, :, 25:].min() == 1024


def test_16bit_png_uses_its_bit_depth(tmp_path):
    full = (_gradient() * 65535).astype(np.uint16)
    Image.fromarray(full).save(tmp_path / "full.png")
    twelve = (_gradient() * 4095).astype(np.uint16)
    Image.fromarray(twelve).save(tmp_path / "twelve.png")
    assert Image.open(tmp_path / "full.png").mode.startswith("I")
    for name in ("full.png", "twelve.png"):
        x = load_image(tmp_path / name, size=64)
        assert float(x.min()) < -1000 and float(x.max()) > 1000, name


@pytest.mark.parametrize("mode", ["RGB", "RGBA"])
def test_colour_images_become_gray_with_a_warning(tmp_path, mode):
    g = (_gradient() * 255).astype(np.uint8)
    rgb = np.stack([g, g // 2, 255 - g] + ([np.full_like(g, 255)] if mode == "RGBA" else []), -1)
    Image.fromarray(rgb, mode).save(tmp_path / "c.png")
    with pytest.warns(ColorImageWarning, match="converted to grayscale"):
        x = load_image(tmp_path / "c.png", size=32)
    assert x.shape == (1, 1, 32, 32)


def test_jpg_and_gray_rgb_jpg_agree(tmp_path):
    g = (_gradient() * 255).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "rgb.jpg", quality=95)
    a = load_image(tmp_path / "g.jpg", size=32)
    with pytest.warns(ColorImageWarning, match="identical"):
        b = load_image(tmp_path / "rgb.jpg", size=32)
    assert torch.allclose(a, b, atol=40)


def test_center_crop_on_the_long_side(tmp_path):
    a = np.zeros((100, 200), np.uint8)
    a[:, 50:150] = 255  # only the central square is white
    Image.fromarray(a).save(tmp_path / "wide.png")
    x = load_image(tmp_path / "wide.png", size=50)
    assert x.shape == (1, 1, 50, 50)
    assert float(x.min()) > 1000


@pytest.mark.parametrize(
    ("content", "reason"),
    [
        (b"", "empty file"),
        (b"hello, not an image", "not an image format"),
        (b"\x89PNG\r\n\x1a\n" + b"\x00" * 40, "cannot read image|not an image|corrupt"),
    ],
)
def test_bad_files_give_one_line_errors_naming_the_file(tmp_path, content, reason):
    f = tmp_path / "bad.png"
    f.write_bytes(content)
    with pytest.raises(ImageLoadError, match=reason) as info:
        load_image(f)
    assert str(f) in str(info.value) and "\n" not in str(info.value)


def test_truncated_png_is_reported(tmp_path):
    f = tmp_path / "t.png"
    Image.fromarray((np.random.default_rng(0).random((64, 64)) * 255).astype(np.uint8)).save(f)
    f.write_bytes(f.read_bytes()[:200])
    with pytest.raises(ImageLoadError, match="t.png"):
        load_image(f)


def test_missing_folder_tiny_and_huge_images(tmp_path, monkeypatch):
    with pytest.raises(ImageLoadError, match="file not found"):
        load_image(tmp_path / "nope.png")
    with pytest.raises(ImageLoadError, match="is a folder"):
        load_image(tmp_path)
    Image.fromarray(np.zeros((4, 4), np.uint8)).save(tmp_path / "small.png")
    with pytest.raises(ImageLoadError, match="too small"):
        load_image(tmp_path / "small.png")
    Image.fromarray(np.zeros((100, 100), np.uint8)).save(tmp_path / "big.png")
    monkeypatch.setattr(gio, "MAX_PIXELS", 5000)
    with pytest.raises(ImageLoadError, match="too large"):
        load_image(tmp_path / "big.png")


# -- DICOM -----------------------------------------------------------------------------


def _write_dicom(path, pixels: np.ndarray, interpretation="MONOCHROME2", **extra):
    from pydicom.dataset import Dataset, FileMetaDataset
    from pydicom.uid import ExplicitVRLittleEndian, SecondaryCaptureImageStorage, generate_uid

    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = SecondaryCaptureImageStorage
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = SecondaryCaptureImageStorage
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.Rows, ds.Columns = pixels.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = interpretation
    ds.BitsAllocated = 16
    ds.BitsStored = 12
    ds.HighBit = 11
    ds.PixelRepresentation = 0
    for k, v in extra.items():
        setattr(ds, k, v)
    ds.PixelData = pixels.astype(np.uint16).tobytes()
    ds.save_as(path, enforce_file_format=True)
    return path


def test_dicom_monochrome1_is_inverted(tmp_path):
    pixels = (_gradient(48, 48) * 4095).astype(np.uint16)
    m2 = load_image(_write_dicom(tmp_path / "m2.dcm", pixels), size=48)
    m1 = load_image(_write_dicom(tmp_path / "m1", pixels, "MONOCHROME1"), size=48)  # no suffix
    assert float(m2[0, 0, :, 0].mean()) < -1000 and float(m2[0, 0, :, -1].mean()) > 1000
    assert torch.allclose(m1, -m2, atol=1.0)


def test_dicom_voi_lut_option_windows_the_image(tmp_path):
    pixels = (_gradient(48, 48) * 4095).astype(np.uint16)
    f = _write_dicom(tmp_path / "w.dcm", pixels, WindowCenter=1000, WindowWidth=400)
    raw = load_image(f, size=48)
    windowed = load_image(f, size=48, voi_lut=True)
    assert not torch.allclose(raw, windowed, atol=10)
    # Windowing saturates everything right of the window at the top of the range.
    assert float(windowed[0, 0, :, -10:].min()) > 1000 > float(raw[0, 0, :, 20].mean())


def test_rgb_dicom_and_dicom_without_image_are_refused():
    pytest.importorskip("pydicom")
    from pydicom.data import get_testdata_file

    with pytest.raises(ImageLoadError, match="colour"):
        load_image(get_testdata_file("examples_rgb_color.dcm"))
    with pytest.raises(ImageLoadError, match="without an image"):
        load_image(get_testdata_file("nested_priv_SQ.dcm"))


@pytest.mark.parametrize(
    "name",
    ["CT_small.dcm", "MR_small_RLE.dcm", "MR_small_bigendian.dcm", "JPEG2000.dcm", "image_dfl.dcm"],
)
def test_pydicom_test_files_load(name):
    from pydicom.data import get_testdata_file

    x = load_image(get_testdata_file(name), size=64)
    assert x.shape == (1, 1, 64, 64)
    assert float(x.min()) >= -1024 and float(x.max()) <= 1024
    assert float(x.std()) > 0


def test_undecodable_compression_names_the_fix():
    from pydicom.data import get_testdata_file

    f = get_testdata_file("MR_small_jpeg_ls_lossless.dcm")
    try:
        load_image(f)
    except ImageLoadError as e:
        assert "JPEG-LS" in str(e) and "pip install" in str(e)
    # With a JPEG-LS decoder installed, loading simply works.


def test_shared_dicoms_and_images(shared_data):
    folder = shared_data / "xrv-test-images"
    dcm = folder / "1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"
    normal = load_image(dcm)
    fake_m1 = load_image(folder / "Fake_MONOHR1.dcm")
    assert normal.shape == (1, 1, 224, 224)
    # TorchXRayVision's Fake_MONOHR1 holds the same pixel values under a MONOCHROME1
    # header, so after the fix it must come out exactly inverted.
    assert torch.allclose(fake_m1, -normal, atol=1.0)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", ColorImageWarning)
        for f in sorted(folder.iterdir()):
            x = load_image(f, size=128)
            assert x.shape == (1, 1, 128, 128) and float(x.std()) > 50, f.name


# -- expand_inputs ---------------------------------------------------------------------


def test_expand_inputs_folders_globs_csv_and_missing(tmp_path):
    sub = tmp_path / "sub"
    sub.mkdir()
    for name in ("b.png", "a.jpg", "sub/c.dcm", "notes.txt"):
        (tmp_path / name).write_bytes(b"x")
    assert [p.name for p in expand_inputs([tmp_path])] == ["a.jpg", "b.png", "c.dcm"]
    assert [p.name for p in expand_inputs([str(tmp_path / "*.png")])] == ["b.png"]
    (tmp_path / "list.csv").write_text("image,label\nb.png,x\nsub/c.dcm,y\n")
    got = expand_inputs([tmp_path / "list.csv", tmp_path / "b.png", tmp_path / "gone.png"])
    assert got == [tmp_path / "b.png", tmp_path / "sub" / "c.dcm", tmp_path / "gone.png"]
    with pytest.raises(ValueError, match="matched no files"):
        expand_inputs([str(tmp_path / "*.bmp")])
    (tmp_path / "bad.csv").write_text("path\nb.png\n")
    with pytest.raises(ValueError, match="no 'image' column"):
        expand_inputs([tmp_path / "bad.csv"])
