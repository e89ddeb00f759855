"""Read the chest X-rays users bring (PNG, JPG, 16-bit, RGB, DICOM) into the models' convention.

:func:`load_image` turns one file into a ``(1, 1, size, size)`` float tensor in
TorchXRayVision's convention: one channel, values in [−1024, 1024], center-cropped to a
square on the long side and resized (``XRayCenterCrop`` + ``XRayResizer``). DICOM goes
through TorchXRayVision's reader (MONOCHROME1 inverted, optional VOI LUT); 8- and 16-bit
PNG/JPG/TIFF go through Pillow. Anything that cannot be read becomes an
:class:`ImageLoadError` whose one-line message names the file and the reason.
:func:`expand_inputs` turns command-line arguments (files, folders, globs, CSV files with
an ``image`` column) into the list of files to explain.
"""

from __future__ import annotations

import contextlib
import csv
import fnmatch
import glob
import logging
import os
import stat
import warnings
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np
import torch
from PIL import Image, UnidentifiedImageError

from .pixels import uint8_to_model

log = logging.getLogger(__name__)

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".bmp", ".dcm", ".dicom", ".dic")
"""File suffixes picked up when a folder is given."""
MAX_PIXELS = 120_000_000
"""Images with more pixels than this (≈ 11000²) are refused as absurdly large."""
MAX_FILE_BYTES = 2 * 1024**3
"""Files larger than this (2 GiB) are refused without reading."""
MIN_SIDE = 8
"""Images with a side shorter than this are refused."""
_MONOCHROME = ("MONOCHROME1", "MONOCHROME2")


class ImageLoadError(ValueError):
    """A file could not be turned into an image; the message names the file and why."""


class ColorImageWarning(UserWarning):
    """A colour image (RGB, RGBA, palette) was converted to grayscale."""


def _xrv():
    # TorchXRayVision silences every warning process-wide on import; keep our filters.
    with warnings.catch_warnings():
        import torchxrayvision as xrv
    return xrv


def is_dicom(path: str | os.PathLike[str]) -> bool:
    """True when ``path`` has the DICOM magic bytes (``DICM`` at offset 128) or a DICOM suffix."""
    p = Path(path)
    if p.suffix.lower() in (".dcm", ".dicom", ".dic"):
        return True
    if not p.is_file():  # opening a named pipe or a device would block or never end
        return False
    try:
        with open(p, "rb") as f:
            header = f.read(132)
    except OSError:
        return False
    return len(header) >= 132 and header[128:132] == b"DICM"


def load_image(
    path: str | os.PathLike[str], size: int = 224, *, voi_lut: bool = False
) -> torch.Tensor:
    """Load one image file as a ``(1, 1, size, size)`` float32 tensor in [−1024, 1024].

    Args:
        path: a PNG, JPG, TIFF or BMP (8- or 16-bit; RGB/RGBA/palette images are converted
            to grayscale, with a :class:`ColorImageWarning` unless their colour channels
            are identical, i.e. grayscale stored as RGB) or a DICOM file (detected by
            suffix or magic bytes; MONOCHROME1 is inverted; compressed transfer syntaxes
            work when pydicom has a decoder for them).
        size: output side length (default 224, the bundled models' input size).
        voi_lut: apply the DICOM's VOI LUT / window (TorchXRayVision's ``voi_lut``
            option; default False, the raw stored values).

    Returns:
        The image, center-cropped to a square and resized like TorchXRayVision's
        ``XRayCenterCrop`` + ``XRayResizer(size)``.

    Raises:
        ImageLoadError: missing, empty, unreadable, non-image, corrupt, colour DICOM, too
            large or too small files, folders, named pipes and devices; the message is one
            line starting with the file's path, then the reason.

    Example:
        >>> import tempfile, pathlib, numpy as np
        >>> from PIL import Image
        >>> f = pathlib.Path(tempfile.mkdtemp()) / "cxr.png"
        >>> Image.fromarray(np.full((300, 400), 255, np.uint8)).save(f)
        >>> x = load_image(f, size=64)
        >>> x.shape, float(x.max())
        (torch.Size([1, 1, 64, 64]), 1024.0)
    """
    if size < MIN_SIDE:
        raise ValueError(f"size must be >= {MIN_SIDE}, got {size}")
    p = Path(path)
    if not p.exists():
        raise ImageLoadError(f"{p}: file not found")
    try:
        st = p.stat()
    except OSError as e:
        raise ImageLoadError(f"{p}: cannot read file ({_one_line(e)})") from None
    if stat.S_ISDIR(st.st_mode):
        raise ImageLoadError(f"{p}: is a folder, not an image file")
    if not stat.S_ISREG(st.st_mode):
        raise ImageLoadError(f"{p}: not a regular file ({_file_kind(st.st_mode)})")
    n_bytes = st.st_size
    if n_bytes == 0:
        raise ImageLoadError(f"{p}: empty file (0 bytes)")
    if n_bytes > MAX_FILE_BYTES:
        raise ImageLoadError(f"{p}: file too large ({n_bytes / 1024**3:.1f} GiB)")
    if not os.access(p, os.R_OK):
        raise ImageLoadError(f"{p}: permission denied (the file is not readable)")
    try:
        arr = _read_dicom(p, voi_lut) if is_dicom(p) else _read_pillow(p)
    except ImageLoadError:
        raise
    except Exception as e:  # noqa: BLE001 - decoders fail on odd files in many ways
        # (struct.error, TypeError, pydicom's BytesLengthException, ...); each must become
        # the one-line error that the batch reports next to the file.
        raise ImageLoadError(f"{p}: cannot read image ({_one_line(e)})") from e
    return _to_model_convention(arr, size)


def _file_kind(mode: int) -> str:
    if stat.S_ISFIFO(mode):
        return "a named pipe"
    if stat.S_ISSOCK(mode):
        return "a socket"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    return "not a file"


def _printable(text: object, limit: int = 200) -> str:
    """``text`` on one line: control characters escaped, at most ``limit`` characters."""
    s = "".join(c if c.isprintable() else repr(c)[1:-1] for c in str(text))
    return s if len(s) <= limit else s[: limit - 1] + "…"


def _one_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return f"{type(e).__name__}: {_printable(text[0])}" if text else type(e).__name__


def _check_shape(p: Path, height: int, width: int, frames: int = 1) -> None:
    if height * width * frames > MAX_PIXELS:
        raise ImageLoadError(
            f"{p}: image too large ({width}x{height}"
            + (f"x{frames} frames" if frames > 1 else "")
            + f" pixels, limit {MAX_PIXELS:,}); downscale it first"
        )
    if min(height, width) < MIN_SIDE:
        raise ImageLoadError(f"{p}: image too small ({width}x{height} pixels)")


def _read_pillow(p: Path) -> np.ndarray:
    """A float (H, W) array in [−1024, 1024] from a Pillow-readable file."""
    try:
        with warnings.catch_warnings():
            # Pillow warns (e.g. "Corrupt EXIF data") on broken files; the error says it.
            warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
            warnings.simplefilter("error", Image.DecompressionBombWarning)
            im = Image.open(p)
    except UnidentifiedImageError:
        raise ImageLoadError(
            f"{p}: not an image format Pillow or pydicom can read (or a corrupt or truncated file)"
        ) from None
    except (Image.DecompressionBombError, Image.DecompressionBombWarning) as e:
        raise ImageLoadError(f"{p}: image too large ({_one_line(e)})") from None
    with im:
        w, h = im.size
        _check_shape(p, h, w, getattr(im, "n_frames", 1) if im.format == "TIFF" else 1)
        if getattr(im, "n_frames", 1) > 1:
            log.warning("%s: %d frames; using the first", p, im.n_frames)
        try:
            with warnings.catch_warnings():
                warnings.filterwarnings("ignore", category=UserWarning, module="PIL")
                im.load()
        except (OSError, SyntaxError, ValueError, TypeError) as e:
            raise ImageLoadError(f"{p}: truncated or corrupt image ({_one_line(e)})") from None
        return _pillow_to_array(p, im)


def _pillow_to_array(p: Path, im: Image.Image) -> np.ndarray:
    mode = im.mode
    if mode in ("RGB", "RGBA", "LA", "P", "PA", "CMYK", "YCbCr", "HSV", "LAB", "RGBX"):
        rgb = np.asarray(im.convert("RGB"))
        r, g, b = rgb[..., 0], rgb[..., 1], rgb[..., 2]
        if np.array_equal(r, g) and np.array_equal(g, b):
            # Grayscale saved as RGB (common for exported X-rays): nothing is lost.
            log.debug("%s: %s image with identical channels read as grayscale", p, mode)
            return uint8_to_model(r)
        warnings.warn(
            f"{p}: {mode} image converted to grayscale (luminance of the colours)",
            ColorImageWarning,
            stacklevel=4,
        )
        return uint8_to_model(np.asarray(im.convert("L")))
    if mode in ("L", "1"):
        return uint8_to_model(np.asarray(im.convert("L")))
    if mode.startswith("I;16") or mode == "I":
        arr = np.asarray(im).astype(np.int64)
        if arr.min() < 0 or arr.max() > 65535:
            return _rescale(p, arr, "32-bit values outside 0..65535")
        return uint8_to_model(arr, maxval=_bit_depth_max(p, arr))
    if mode == "F":
        return _rescale(p, np.asarray(im), "floating-point image")
    raise ImageLoadError(f"{p}: unsupported image mode {mode!r}")


def _bit_depth_max(p: Path, arr: np.ndarray) -> int:
    # 16-bit containers often hold 10-, 12- or 14-bit data; scaling those by 65535 would
    # leave the image nearly black, so use the smallest such depth that fits the values.
    peak = int(arr.max())
    for bits in (8, 10, 12, 14, 16):
        if peak < 2**bits:
            if bits < 16:
                log.info("%s: 16-bit file with values up to %d; read as %d-bit", p, peak, bits)
            return 2**bits - 1
    return 65535


def _rescale(p: Path, arr: np.ndarray, why: str) -> np.ndarray:
    arr = np.asarray(arr, dtype=np.float64)
    if not np.isfinite(arr).all():
        raise ImageLoadError(f"{p}: image contains NaN or infinite values")
    lo, hi = float(arr.min()), float(arr.max())
    log.info("%s: %s; rescaled its range [%g, %g] to [-1024, 1024]", p, why, lo, hi)
    if hi <= lo:
        return np.zeros(arr.shape, dtype=np.float32)
    return ((arr - lo) / (hi - lo) * 2048.0 - 1024.0).astype(np.float32)


def _read_dicom(p: Path, voi_lut: bool) -> np.ndarray:
    """A float (H, W) array in [−1024, 1024] from a DICOM file, via TorchXRayVision."""
    import pydicom
    from pydicom.errors import InvalidDicomError

    try:
        with warnings.catch_warnings(record=True) as caught, _quiet_pydicom():
            warnings.simplefilter("always")
            header = pydicom.dcmread(p, stop_before_pixels=True, force=True)
            interpretation = str(header.get("PhotometricInterpretation", "MONOCHROME2"))
            rows = int(header.get("Rows", 0) or 0)
            cols = int(header.get("Columns", 0) or 0)
            frames = int(header.get("NumberOfFrames", 1) or 1)
    except InvalidDicomError as e:
        raise ImageLoadError(f"{p}: not a readable DICOM file ({_one_line(e)})") from None
    except Exception as e:  # noqa: BLE001 - a broken header fails in many ways
        raise ImageLoadError(f"{p}: broken DICOM header ({_one_line(e)})") from None
    for w in caught:
        log.debug("%s: pydicom: %s", p, _printable(w.message))
    if interpretation not in _MONOCHROME:
        raise ImageLoadError(
            f"{p}: {_printable(interpretation, 40)} (colour) DICOM is not supported; chest "
            "X-rays are MONOCHROME1/2 — convert it to grayscale first"
        )
    if not rows or not cols:
        raise ImageLoadError(f"{p}: DICOM file without an image (no Rows/Columns)")
    _check_shape(p, rows, cols, frames)
    xrv = _xrv()
    with warnings.catch_warnings(record=True) as caught, _quiet_pydicom():
        warnings.simplefilter("always")
        try:
            arr = np.asarray(xrv.utils.read_xray_dcm(p, voi_lut=voi_lut, fix_monochrome=True))
        except ValueError as e:
            if "higher than expected bound" not in str(e):
                raise
            arr = _read_dicom_fallback(p, voi_lut)
        except RuntimeError as e:
            syntax = header.file_meta.get("TransferSyntaxUID") if header.file_meta else None
            name = getattr(syntax, "name", syntax) or "unknown transfer syntax"
            raise ImageLoadError(
                f"{p}: cannot decode {_printable(name, 80)} pixel data; install a pydicom decoder "
                "(pip install pylibjpeg pylibjpeg-libjpeg pylibjpeg-openjpeg)"
            ) from e
    for w in caught:
        if "MONOCHROME1" in str(w.message):
            log.info("%s: MONOCHROME1 inverted to MONOCHROME2", p)
    if arr.ndim == 3:
        log.warning("%s: %d frames; using the first", p, arr.shape[0])
        arr = arr[0]
    if arr.ndim != 2:
        raise ImageLoadError(f"{p}: DICOM pixel data has shape {arr.shape}, expected 2D")
    if arr.max() < -1024 + 2048 / 16 and "MONOCHROME1" not in interpretation:
        log.warning(
            "%s: pixel values use under 1/16 of the %s-bit range the header declares; the "
            "image will look nearly black (try the VOI LUT option)",
            p,
            header.get("BitsStored", "?"),
        )
    if int(header.get("PixelRepresentation", 0)) == 1 or voi_lut:
        # xrv scales by 2**BitsStored − 1 as if values were unsigned; signed data and VOI
        # output can fall outside that range, so map their actual range instead.
        if arr.min() < -1024.5 or arr.max() > 1024.5:
            return _rescale(p, arr, "signed or windowed DICOM values")
    return arr.astype(np.float32)


@contextlib.contextmanager
def _quiet_pydicom() -> Iterator[None]:
    # pydicom logs a traceback per failed decoder plugin; we raise one clear error instead.
    logger = logging.getLogger("pydicom")
    level = logger.level
    logger.setLevel(logging.CRITICAL)
    try:
        yield
    finally:
        logger.setLevel(level)


def _read_dicom_fallback(p: Path, voi_lut: bool) -> np.ndarray:
    import pydicom
    from pydicom.pixels import apply_voi_lut

    ds = pydicom.dcmread(p, force=True)
    data = ds.pixel_array.astype(np.float64)
    if voi_lut:
        data = apply_voi_lut(data, ds, index=0)
    if ds.get("PhotometricInterpretation") == "MONOCHROME1":
        data = data.max() + data.min() - data
    return _rescale(p, data, "values above the DICOM's stored bit depth")


def _to_model_convention(arr: np.ndarray, size: int) -> torch.Tensor:
    xrv = _xrv()
    img = np.clip(np.asarray(arr, dtype=np.float32), -1024.0, 1024.0)[None]
    img = xrv.datasets.XRayCenterCrop()(img)
    img = xrv.datasets.XRayResizer(size)(img)
    return torch.from_numpy(np.ascontiguousarray(img, dtype=np.float32))[None].clamp_(
        -1024.0, 1024.0
    )


def _is_glob(arg: str) -> bool:
    return any(c in arg for c in "*?[")


def _files_in(folder: Path) -> list[Path]:
    """Image files under ``folder``, recursively, without following directory symlinks.

    ``folder`` itself may be a symlink (given explicitly, it is entered once); symlinks to
    directories below it are skipped, so links pointing back up cannot loop. Symlinks to
    files are kept.
    """
    found = []
    for root, _dirs, names in os.walk(folder, followlinks=False):
        for name in names:
            f = Path(root, name)
            if name.startswith(".") or not f.is_file():
                continue
            if f.suffix.lower() in IMAGE_SUFFIXES or (not f.suffix and is_dicom(f)):
                found.append(f)
    return sorted(found)


def _glob(pattern: str) -> list[str]:
    """``glob.glob(pattern, recursive=True)``, except that ``**`` never enters symlinked folders.

    The standard ``**`` follows directory symlinks, so two links pointing at each other
    (or one at its parent) make it run until the path length limit — in effect forever.
    Otherwise glob's rules hold: ``*`` and ``**`` skip names starting with a dot, a
    trailing separator matches folders only, and a non-recursive component may pass
    through a symlinked folder (the pattern bounds its depth).
    """
    seps = tuple(c for c in (os.sep, os.altsep) if c)
    drive, rest = os.path.splitdrive(pattern)
    body = rest.lstrip("".join(seps))
    anchor = drive + rest[: len(rest) - len(body)]
    folders_only = body.endswith(seps)
    for sep in seps[1:]:
        body = body.replace(sep, os.sep)
    parts = [c for c in body.split(os.sep) if c]
    i = 0
    while i < len(parts) and not glob.has_magic(parts[i]):
        i += 1
    found: list[str] = []

    def join(folder: str, name: str) -> str:
        return os.path.join(folder, name) if folder else name

    def is_dir(e: os.DirEntry[str], follow: bool) -> bool:
        try:
            return e.is_dir(follow_symlinks=follow)
        except OSError:
            return False

    def entries(folder: str) -> list[os.DirEntry[str]]:
        try:
            with os.scandir(folder or os.curdir) as it:
                return list(it)
        except OSError:
            return []

    def match(path: str, entry: os.DirEntry[str] | None = None) -> None:
        if not path:  # a relative ``**`` matching zero folders: glob omits ""
            return
        if not folders_only:
            found.append(path)
        elif is_dir(entry, follow=True) if entry is not None else os.path.isdir(path):
            found.append(path)

    def walk(folder: str, k: int) -> None:
        if k == len(parts):
            match(folder)
            return
        part, last = parts[k], k == len(parts) - 1
        if part == "**":
            walk(folder, k + 1)  # ``**`` matching zero folders
            for e in entries(folder):
                if e.name.startswith("."):
                    continue
                if is_dir(e, follow=False):
                    walk(join(folder, e.name), k)
                elif last and not is_dir(e, follow=True):  # a file (or a link to one)
                    match(join(folder, e.name), e)
        elif glob.has_magic(part):
            for e in entries(folder):
                if e.name.startswith(".") and not part.startswith("."):
                    continue
                if fnmatch.fnmatch(e.name, part):
                    if last:
                        match(join(folder, e.name), e)
                    elif is_dir(e, follow=True):
                        walk(join(folder, e.name), k + 1)
        else:
            path = join(folder, part)
            if last:
                if os.path.lexists(path):
                    match(path)
            elif os.path.isdir(path):
                walk(path, k + 1)

    base = os.path.join(anchor, *parts[:i]) if anchor or i else ""
    if i == len(parts):
        return [base] if os.path.lexists(base) else []
    walk(base, i)
    return list(dict.fromkeys(found))


def _files_in_csv(path: Path, column: str) -> list[Path]:
    with open(path, newline="", encoding="utf-8-sig") as f:
        reader = csv.DictReader(f)
        fields = reader.fieldnames or []
        if column not in fields:
            raise ValueError(
                f"{path}: CSV has no {column!r} column (columns: {', '.join(fields) or 'none'}); "
                f"add a column named {column!r} with one image path per row"
            )
        rows = [r[column].strip() for r in reader if (r.get(column) or "").strip()]
    return [p if p.is_absolute() else path.parent / p for p in map(Path, rows)]


def expand_inputs(
    args: Iterable[str | os.PathLike[str]], *, csv_column: str = "image"
) -> list[Path]:
    """Expand command-line arguments into the image files to explain, in order, without repeats.

    Args:
        args: files, folders (searched recursively for image suffixes and extension-less
            DICOM files), glob patterns (``**`` allowed), or ``.csv`` files with an
            ``image`` column (paths relative to the CSV's folder). Recursion (folders and
            ``**``) does not follow symlinks to folders, so link loops cannot hang it;
            symlinked files are read.
        csv_column: the CSV column holding image paths (default ``"image"``).

    Returns:
        The files. A plain path that does not exist is kept, so the run reports it as a
        failure next to the others.

    Raises:
        ValueError: a glob pattern matched nothing or a CSV has no ``image`` column.

    Example:
        >>> import tempfile, pathlib
        >>> d = pathlib.Path(tempfile.mkdtemp())
        >>> for n in ("b.png", "a.jpg", "notes.txt"):
        ...     _ = (d / n).write_bytes(b"x")
        >>> [p.name for p in expand_inputs([d])]
        ['a.jpg', 'b.png']
    """
    out: list[Path] = []
    for arg in args:
        text = os.fspath(arg)
        p = Path(text).expanduser()
        if p.is_dir():
            files = _files_in(p)
            if not files:
                log.warning("%s: folder has no image files", p)
            out.extend(files)
        elif p.is_file() and p.suffix.lower() == ".csv":
            out.extend(_files_in_csv(p, csv_column))
        elif not p.exists() and _is_glob(text):
            matches = sorted(_glob(os.path.expanduser(text)))
            if not matches:
                raise ValueError(f"{text}: the pattern matched no files")
            recursive = "**" in Path(text).parts
            for m in map(Path, matches):
                if not m.is_dir():
                    out.append(m)
                elif not (recursive and m.is_symlink()):  # ``**`` does not enter those
                    out.extend(_files_in(m))
        else:
            out.append(p)
    return list(dict.fromkeys(out))
