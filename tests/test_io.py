"""load_image and expand_inputs: formats, normalisation, DICOM, and one-line errors."""

from __future__ import annotations

import glob
import os
import signal
import stat
import struct
import threading
import warnings
from pathlib import Path

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
    with pytest.warns(ColorImageWarning, match="converted to grayscale") as record:
        x = load_image(tmp_path / "c.png", size=32)
    assert x.shape == (1, 1, 32, 32)
    assert len(record) == 1 and "luminance of the colours" in str(record[0].message)


def test_one_pixel_of_colour_is_enough_to_warn(tmp_path):
    g = (_gradient() * 255).astype(np.uint8)
    rgb = np.stack([g] * 3, -1)
    rgb[10, 20, 0] ^= 1  # red differs by one level in one pixel
    Image.fromarray(rgb).save(tmp_path / "tint.png")
    with pytest.warns(ColorImageWarning, match="tint.png: RGB image converted to grayscale"):
        load_image(tmp_path / "tint.png", size=32)


def _gray_as(mode: str, g: np.ndarray) -> Image.Image:
    if mode == "RGB":
        return Image.fromarray(np.stack([g] * 3, -1))
    if mode == "RGBA":
        return Image.fromarray(np.stack([g] * 3 + [np.full_like(g, 255)], -1))
    if mode == "LA":
        return Image.fromarray(g).convert("LA")
    im = Image.fromarray(g).convert("P")  # a gray palette
    assert im.mode == "P"
    return im


@pytest.mark.parametrize("mode", ["RGB", "RGBA", "LA", "P"])
def test_grayscale_stored_as_colour_is_read_silently_as_grayscale(tmp_path, caplog, mode):
    g = (_gradient() * 255).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "gray.png")
    _gray_as(mode, g).save(tmp_path / "stored.png")
    assert Image.open(tmp_path / "stored.png").mode == mode
    caplog.set_level("DEBUG", logger="gifsplanation")
    with warnings.catch_warnings():
        warnings.simplefilter("error")  # any warning (ColorImageWarning included) fails
        got = load_image(tmp_path / "stored.png", size=32)
    assert torch.equal(got, load_image(tmp_path / "gray.png", size=32))
    assert "identical channels read as grayscale" in caplog.text
    assert not [r for r in caplog.records if r.levelno >= 30]


def test_jpg_and_gray_rgb_jpg_agree(tmp_path):
    g = (_gradient() * 255).astype(np.uint8)
    Image.fromarray(g).save(tmp_path / "g.jpg", quality=95)
    Image.fromarray(np.stack([g] * 3, -1)).save(tmp_path / "rgb.jpg", quality=95)
    a = load_image(tmp_path / "g.jpg", size=32)
    with warnings.catch_warnings():
        warnings.simplefilter("error", ColorImageWarning)
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


# -- unusual files: every failure is one line that starts with the path ----------------


def _one_line_error(path, match: str = "") -> str:
    """The ImageLoadError message for ``path``, checked: one printable line, path first."""
    with pytest.raises(ImageLoadError, match=match) as info:
        _call_with_timeout(load_image, path, size=32)
    message = str(info.value)
    assert message.startswith(f"{path}: "), message
    assert message.isprintable() and "\n" not in message, repr(message)
    return message


class _TimedOut(BaseException):
    """Raised by SIGALRM inside a call that took too long (not an Exception: nothing eats it)."""


def _call_with_timeout(fn, *args, timeout: float = 20.0, **kwargs):
    """``fn(*args, **kwargs)``, failing the test (instead of hanging it) after ``timeout`` s.

    SIGALRM interrupts the call itself, so a runaway search stops rather than running on
    in the background; without it (Windows, another thread) a daemon thread is used.
    """
    if (
        not hasattr(signal, "setitimer")
        or threading.current_thread() is not threading.main_thread()
    ):
        result: dict = {}

        def run() -> None:
            try:
                result["value"] = fn(*args, **kwargs)
            except BaseException as e:  # noqa: BLE001 - re-raised in the caller
                result["error"] = e

        worker = threading.Thread(target=run, daemon=True)
        worker.start()
        worker.join(timeout)
        if worker.is_alive():
            pytest.fail(f"{fn.__name__} did not return within {timeout:g} s")
        if "error" in result:
            raise result["error"]
        return result["value"]

    def expire(signum, frame) -> None:  # noqa: ANN001
        raise _TimedOut

    previous = signal.signal(signal.SIGALRM, expire)
    signal.setitimer(signal.ITIMER_REAL, timeout)
    try:
        return fn(*args, **kwargs)
    except _TimedOut:
        pytest.fail(f"{fn.__name__} did not return within {timeout:g} s")
    finally:
        signal.setitimer(signal.ITIMER_REAL, 0)
        signal.signal(signal.SIGALRM, previous)


def test_folder_named_like_an_image(tmp_path):
    (tmp_path / "x.png").mkdir()
    _one_line_error(tmp_path / "x.png", "is a folder")


@pytest.mark.skipif(not hasattr(os, "mkfifo"), reason="no named pipes on this platform")
def test_named_pipe_named_like_an_image_does_not_hang(tmp_path):
    for name in ("x.png", "x.dcm", "x"):
        os.mkfifo(tmp_path / name)  # opening it for reading would block forever
        _one_line_error(tmp_path / name, "not a regular file \\(a named pipe\\)")
    assert not gio.is_dicom(tmp_path / "x")
    # A folder holding pipes lists none of them (and does not block either).
    (tmp_path / "ok.png").write_bytes(b"x")
    assert _call_with_timeout(expand_inputs, [tmp_path]) == [tmp_path / "ok.png"]


@pytest.mark.skipif(not Path("/dev/null").exists(), reason="no /dev/null")
def test_device_is_refused():
    _one_line_error(Path("/dev/null"), "not a regular file \\(a device\\)")


def test_unreadable_file(tmp_path):
    f = tmp_path / "locked.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(f)
    f.chmod(0)
    try:
        if os.access(f, os.R_OK):
            pytest.skip("running as root (or with CAP_DAC_OVERRIDE): every file is readable")
        _one_line_error(f, "permission denied")
    finally:
        f.chmod(stat.S_IRUSR | stat.S_IWUSR)


def test_unreadable_file_simulated(tmp_path, monkeypatch):
    # Root reads everything, so also fake both ways a read can be refused.
    f = tmp_path / "locked.png"
    Image.fromarray(np.zeros((32, 32), np.uint8)).save(f)
    monkeypatch.setattr(gio.os, "access", lambda path, mode: False)
    _one_line_error(f, "permission denied")
    monkeypatch.undo()

    def refuse(*args, **kwargs):  # noqa: ANN002, ANN003, ANN202 - e.g. an ACL or SELinux
        raise PermissionError(13, "Permission denied", str(f))

    monkeypatch.setattr(gio.Image, "open", refuse)
    _one_line_error(f, "cannot read image \\(PermissionError")


@pytest.mark.parametrize("n_bytes", [8, 12, 16, 20, 24, 29, 33, 40, 60])
def test_png_truncated_in_the_header(tmp_path, n_bytes):
    full = tmp_path / "full.png"
    Image.fromarray((_gradient() * 255).astype(np.uint8)).save(full)
    f = tmp_path / "cut.png"
    f.write_bytes(full.read_bytes()[:n_bytes])
    _one_line_error(f, "corrupt|truncated|cannot read")


@pytest.mark.parametrize("shape", [(1, 100_000), (100_000, 1)])
def test_one_pixel_wide_images_are_too_small(tmp_path, shape):
    f = tmp_path / "line.png"
    Image.fromarray(np.zeros(shape, np.uint8)).save(f)
    message = _one_line_error(f, "too small")
    assert f"{shape[1]}x{shape[0]} pixels" in message


def test_tiff_without_frames(tmp_path):
    f = tmp_path / "empty.tif"
    # A little-endian TIFF header whose first image directory has no entries.
    f.write_bytes(b"II*\x00" + struct.pack("<IHI", 8, 0, 0))
    _one_line_error(f, "corrupt or truncated")
    g = tmp_path / "nowhere.tif"  # first directory beyond the end of the file
    g.write_bytes(b"II*\x00" + struct.pack("<I", 1000))
    _one_line_error(g, "corrupt or truncated")


def test_corrupted_files_always_give_one_line_errors(tmp_path):
    # Seeded random byte flips and truncations of small PNG/TIFF/JPEG/BMP/DICOM files: each
    # result is either an image or a one-line ImageLoadError (before, struct.error,
    # TypeError and pydicom's BytesLengthException escaped, and messages could hold
    # control characters taken from the file).
    rng = np.random.default_rng(0)
    g = (rng.random((48, 48)) * 255).astype(np.uint8)
    sources = {}
    for suffix, kwargs in ((".png", {}), (".tif", {}), (".jpg", {}), (".bmp", {})):
        Image.fromarray(g).save(tmp_path / f"src{suffix}", **kwargs)
        sources[suffix] = (tmp_path / f"src{suffix}").read_bytes()
    sources[".dcm"] = _write_dicom(tmp_path / "src.dcm", g.astype(np.uint16) * 16).read_bytes()
    outcomes = {"image": 0, "error": 0}
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        for k in range(150):
            suffix = list(sources)[k % len(sources)]
            data = bytearray(sources[suffix])
            for i in rng.integers(0, min(len(data), 600), rng.integers(1, 8)):
                data[i] = rng.integers(0, 256)
            if rng.random() < 0.3:
                data = data[: rng.integers(1, len(data))]
            f = tmp_path / f"fuzz{k}{suffix}"
            f.write_bytes(bytes(data))
            try:
                load_image(f, size=16)
                outcomes["image"] += 1
            except ImageLoadError as e:
                message = str(e)
                assert message.startswith(f"{f}: ") and message.isprintable(), repr(message)
                outcomes["error"] += 1
    assert outcomes["error"] > 50


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


def test_dicom_with_a_broken_header(tmp_path):
    pixels = (_gradient(48, 48) * 4095).astype(np.uint16)
    good = _write_dicom(tmp_path / "good.dcm", pixels).read_bytes()
    # The file meta group length (0002,0000) UL with a length of 3 bytes instead of 4.
    at = good.index(b"\x02\x00\x00\x00UL\x04\x00")
    odd = tmp_path / "odd_length.dcm"
    odd.write_bytes(good[: at + 6] + b"\x03\x00" + good[at + 8 :])
    _one_line_error(odd, "broken DICOM header")
    # Rows holding two values.
    _one_line_error(_write_dicom(tmp_path / "rows.dcm", pixels, Rows=[48, 48]), "broken DICOM")
    # Only the preamble and the magic bytes, then a cut element.
    cut = tmp_path / "cut"
    cut.write_bytes(b"\x00" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\xff1.2")
    _one_line_error(cut, "without an image")
    # A transfer syntax UID with a newline inside: the message stays on one line.
    uid = b"1.2.840.10008.1.2.1\x00"
    assert good.count(uid) == 1
    nl = tmp_path / "newline_uid.dcm"
    nl.write_bytes(good.replace(uid, b"1.2.840.10008\n1.2.1\x00"))
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        _one_line_error(nl, "")


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


def _loop_tree(root: Path) -> Path:
    """One image in a folder whose subfolders link to each other and to their parent."""
    folder = root / "data"
    (folder / "a").mkdir(parents=True)
    (folder / "b").mkdir()
    (folder / "a" / "to_b").symlink_to("../b", target_is_directory=True)
    (folder / "b" / "to_a").symlink_to("../a", target_is_directory=True)
    (folder / "a" / "up").symlink_to("..", target_is_directory=True)
    (folder / "self").symlink_to(".", target_is_directory=True)
    (folder / "loop1").symlink_to("loop2")  # two links naming each other (ELOOP)
    (folder / "loop2").symlink_to("loop1")
    Image.fromarray(np.zeros((16, 16), np.uint8)).save(folder / "b" / "only.png")
    return folder


@pytest.mark.parametrize("form", ["folder", "glob", "glob_any", "glob_all"])
def test_expand_inputs_does_not_follow_symlink_loops(tmp_path, form):
    folder = _loop_tree(tmp_path)
    arg = {
        "folder": folder,
        "glob": f"{folder}/**/*.png",
        "glob_any": f"{folder}/**",
        "glob_all": f"{folder}/**/*",
    }[form]
    got = _call_with_timeout(expand_inputs, [arg], timeout=10)
    if form in ("folder", "glob"):
        assert got == [folder / "b" / "only.png"]
    else:
        # Like glob.glob, ``**`` and ``**/*`` also list the two dangling links (the run
        # reports them as missing files); no image is found twice through a link.
        assert got == sorted([folder / "b" / "only.png", folder / "loop1", folder / "loop2"])


def test_expand_inputs_reads_symlinked_files_and_an_explicit_symlinked_folder(tmp_path):
    folder = _loop_tree(tmp_path)
    (folder / "link.png").symlink_to(folder / "b" / "only.png")
    got = _call_with_timeout(expand_inputs, [folder], timeout=10)
    assert got == [folder / "b" / "only.png", folder / "link.png"]
    # A directory symlink named on the command line is entered (once).
    entry = tmp_path / "entry"
    entry.symlink_to(folder / "b", target_is_directory=True)
    for arg in (entry, f"{entry}/**/*.png"):
        assert _call_with_timeout(expand_inputs, [arg], timeout=10) == [entry / "only.png"]
    # A pattern without ``**`` has a fixed depth, so it may pass through a linked folder.
    got = _call_with_timeout(expand_inputs, [f"{folder}/a/*/*.png"], timeout=10)
    assert got == [folder / "a" / "to_b" / "only.png", folder / "a" / "up" / "link.png"]


@pytest.mark.parametrize(
    "pattern",
    [
        "*.png",
        "**/*.png",
        "**",
        "**/",
        "*/",
        "*/*.jpg",
        "sub/**/*.dcm",
        "sub/**",
        "**/deep/*",
        "s*/**/x?.png",
        "[ab].png",
        ".hidden/*.png",
        "*/.*.png",
        "nothing/**/*.png",
    ],
)
def test_glob_agrees_with_the_glob_module_without_symlinks(tmp_path, monkeypatch, pattern):
    for name in (
        "a.png",
        "b.png",
        "c.jpg",
        "sub/x1.png",
        "sub/x2.jpg",
        "sub/deep/x3.png",
        "sub/deep/y.dcm",
        "sub/.dot.png",
        "other/z.jpg",
        ".hidden/h.png",
    ):
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_bytes(b"x")
    for prefix in (f"{tmp_path}{os.sep}", ""):  # absolute, and relative to the cwd
        monkeypatch.chdir(tmp_path)
        want = glob.glob(prefix + pattern, recursive=True)
        assert sorted(map(Path, gio._glob(prefix + pattern))) == sorted(map(Path, want))
