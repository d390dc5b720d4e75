"""Image files as a viewer shows them: the one image decoder of the project (``ssd-detect``, ``Detector``, the
VOC and COCO readers).

:func:`read_image` returns a :class:`DecodedImage`: an 8-bit RGB PIL image (what the model's
:class:`~ssd_torch.data.preprocess.Preprocess` expects), oriented by the file's EXIF tag, plus what was done to
get there, so a tool can report it. The rules, each one a silent wrong answer of ``Image.open(p).convert("RGB")``:

- **EXIF orientation** (tag 0x0112, values 2..8) is applied, as image viewers do: a phone photo stored sideways
  is detected upright and its boxes are in the displayed image's pixels. ``DecodedImage.orientation`` is the tag
  (1 = none), :data:`ORIENTATIONS` names it.
- **16-bit images** (PIL modes ``I;16*`` and ``I``, e.g. 16-bit grayscale PNG and TIFF) are scaled to 8 bits,
  ``v8 = round(v16 / 257)`` (65535 -> 255), instead of being clipped at 255 (which turns most of them white).
  A 32-bit image with values outside 0..65535 and floating-point images (mode ``F``) have no agreed range and
  are refused with a message.
- Every other mode (palette, grayscale, RGBA, CMYK, ...) is converted by PIL; alpha is dropped; a multi-frame
  file (GIF, TIFF) gives its first frame.

- **Hostile files**: only a regular file is read (a ``/dev/zero`` would be read without end), of at most
  :data:`MAX_FILE_BYTES` bytes (``max_file_bytes``), checked before a byte is read; an image of more than
  :data:`MAX_IMAGE_PIXELS` pixels (``max_image_pixels``) is refused from its header, before its pixels are
  decoded (PIL's own decompression-bomb limit is moved to ours meanwhile: no raw ``DecompressionBombWarning``,
  and a larger limit is possible); a truncated file is refused (PIL's ``LOAD_TRUNCATED_IMAGES`` stays off, and
  a JPEG cut short whose data still ends with the end-of-image marker is detected by :func:`_jpeg_truncated`).

:func:`find_images` lists a folder's files whose suffix PIL registers for a format it can open
(:func:`readable_suffixes`), optionally recursively. Decoding failures are :class:`DatasetError` naming the file,
so a folder run can count and skip them.
"""
from __future__ import annotations

import io
import logging
import os
import stat
import threading
import warnings
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Iterator, Optional

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ssd_torch.errors import DatasetError, UserError

__all__ = ["ORIENTATIONS", "MAX_IMAGE_PIXELS", "MAX_FILE_BYTES", "DecodedImage", "describe_orientation", "to_rgb8",
           "scale_16_to_8", "checked_file", "read_image", "check_image_file", "readable_suffixes", "find_images"]

log = logging.getLogger(__name__)

#: Default pixel limit (``max_image_pixels``): 250 MP (a 192 MP photo reads; 750 MB as 8-bit RGB). PIL's own
#: limit (89 MP, a warning; 179 MP, an error) is replaced by this one while our decoder parses a header.
MAX_IMAGE_PIXELS = 250_000_000
#: Default file-size limit (``max_file_bytes``): 1 GiB, checked before a byte is read.
MAX_FILE_BYTES = 1 << 30

#: EXIF orientation tag -> the transform a viewer (and :func:`read_image`) applies to the stored pixels
ORIENTATIONS: dict[int, str] = {
    1: "none", 2: "mirrored left-right", 3: "rotated 180 deg", 4: "mirrored top-bottom",
    5: "mirrored left-right, rotated 90 deg counter-clockwise", 6: "rotated 90 deg clockwise",
    7: "mirrored left-right, rotated 90 deg clockwise", 8: "rotated 90 deg counter-clockwise",
}
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")
_PIL_LIMIT_LOCK = threading.Lock()
# Tail window searched for the JPEG end-of-image marker / PNG IEND chunk (some encoders append padding bytes).
_TAIL_BYTES = 4096
_JPEG_HEAD, _JPEG_END = b"\xff\xd8\xff", b"\xff\xd9"
_PNG_HEAD, _PNG_END = b"\x89PNG\r\n\x1a\n", b"IEND"
# Truncation test (_jpeg_truncated): how far from grey 128 the last pixel may be (chroma upsampling blends a
# grey block with its neighbours), and how many zero bytes are decoded into the missing blocks.
_GREY_TOLERANCE = 24
_PAD_BYTES = 4096


@dataclass(frozen=True)
class DecodedImage:
    """An 8-bit RGB image ready for the model: ``image`` (PIL, mode RGB, as displayed), ``path`` (None for an
    in-memory input), ``orientation`` (the EXIF tag applied, 1 = none) and ``source_mode`` (the PIL mode before
    conversion, e.g. ``"I;16"``)."""

    image: Image.Image
    path: Optional[Path] = None
    orientation: int = 1
    source_mode: str = "RGB"

    @property
    def size(self) -> tuple[int, int]:
        """``(width, height)`` of the displayed image: the frame of the pixel boxes."""
        return self.image.size



def describe_orientation(tag: int) -> dict[str, object]:
    """``{"exif": tag, "applied": words}`` for reports, e.g. ``{"exif": 6, "applied": "rotated 90 deg clockwise"}``."""
    return {"exif": tag, "applied": ORIENTATIONS[tag]}


def scale_16_to_8(values: np.ndarray) -> np.ndarray:
    """16-bit intensities (0..65535) -> 8-bit (0..255): ``round(v / 257)``, so 65535 -> 255 and ``v8 * 257`` maps
    back to ``v8``. Values outside 0..65535 are a ValueError (there is no agreed range to map them from)."""
    values = np.asarray(values)
    if values.size and (values.min() < 0 or values.max() > 65535):
        raise ValueError(f"integer pixel values {values.min()}..{values.max()} are outside the 16-bit range "
                         "0..65535")
    return np.rint(values.astype(np.float64) / 257.0).astype(np.uint8)


def to_rgb8(image: Image.Image) -> Image.Image:
    """``image`` as 8-bit RGB (module rules: 16-bit scaled, not clipped; float refused with a ValueError)."""
    if image.mode == "RGB":
        return image
    if image.mode in _SIXTEEN_BIT_MODES or image.mode == "I":
        gray = scale_16_to_8(np.asarray(image))
        return Image.fromarray(gray, mode="L").convert("RGB") if gray.ndim == 2 else Image.fromarray(gray)
    if image.mode == "F":
        raise ValueError("floating-point image (PIL mode F) has no agreed pixel range: save it as 8 or 16 bits")
    return image.convert("RGB")


def _orientation(image: Image.Image) -> int:
    try:
        tag = image.getexif().get(_EXIF_ORIENTATION, 1)
    except Exception:  # a malformed EXIF block must not make the pixels unreadable: no orientation then
        return 1
    return tag if tag in ORIENTATIONS else 1


def checked_file(path: str | os.PathLike[str], max_file_bytes: int = MAX_FILE_BYTES) -> Path:
    """``path`` after the checks that come before any byte is read: it names a regular file (a device such as
    ``/dev/zero`` or a FIFO would be read without end) of at most ``max_file_bytes`` bytes. Raises
    :class:`DatasetError` ``"<path>: ..."`` (``image file is missing``, ``not a regular file``, ``... above the
    limit``)."""
    path = Path(path)
    try:
        st = path.stat()
    except FileNotFoundError:
        raise DatasetError(path, "image file is missing") from None
    except (OSError, ValueError) as err:  # ValueError: a NUL byte in the name
        raise DatasetError(path, f"cannot read image ({getattr(err, 'strerror', None) or err})") from None
    if not stat.S_ISREG(st.st_mode):
        raise DatasetError(path, "cannot read image (not a regular file: a device, folder or pipe is never read)")
    if st.st_size > max_file_bytes:
        raise DatasetError(path, f"cannot read image (the file has {st.st_size} bytes, above the limit of "
                                 f"{max_file_bytes}; raise max_file_bytes if the file is genuine)")
    return path


@contextmanager
def _pil_pixel_limit(limit: int) -> Iterator[None]:
    """PIL's decompression-bomb check at ``limit`` while a header is parsed, its warning silenced: our check
    (:func:`_check_pixels`) then gives the message. The limit is a PIL global: a lock keeps threads consistent."""
    with _PIL_LIMIT_LOCK, warnings.catch_warnings():
        warnings.simplefilter("ignore", Image.DecompressionBombWarning)
        old, Image.MAX_IMAGE_PIXELS = Image.MAX_IMAGE_PIXELS, limit
        try:
            yield
        finally:
            Image.MAX_IMAGE_PIXELS = old


def _check_pixels(path: Path, size: tuple[int, int], limit: int) -> None:
    pixels = size[0] * size[1]
    if pixels > limit:
        raise DatasetError(path, f"cannot read image ({size[0]}x{size[1]} = {pixels} pixels, above the limit of "
                                 f"{limit}; raise max_image_pixels if the image is genuine)")


def _jpeg_truncated(path: Path, data: bytes, decoded: Image.Image) -> bool:
    """True when a JPEG whose data stops early (then ends with the end-of-image marker, which hides the cut from
    PIL) decoded its missing blocks as flat grey. Test: insert zero bytes before the last end-of-image marker and
    decode again: a complete scan ignores bytes after its last block (same pixels), a cut one decodes them into
    the missing blocks (other pixels). Only run when the bottom-right pixel is near grey 128 (every cut leaves
    the last block grey), so complete files are decoded once. Limitation: a progressive JPEG cut exactly between
    two scans decodes as a complete, blurrier image and is not detected."""
    if not data.startswith(b"\xff\xd8") or decoded.mode != "RGB":
        return False
    corner = np.asarray(decoded.getpixel((decoded.width - 1, decoded.height - 1)), dtype=np.int64)
    if np.any(np.abs(corner - 128) > _GREY_TOLERANCE):
        return False
    end = data.rfind(b"\xff\xd9")
    if end < 0:
        return False
    padded = data[:end] + bytes(_PAD_BYTES) + data[end:]
    try:
        with Image.open(io.BytesIO(padded)) as again:
            again.load()
            return again.tobytes() != decoded.tobytes()
    except (OSError, SyntaxError, ValueError):
        return True


def _decode(path: Path, oriented: bool, max_image_pixels: int, max_file_bytes: int) -> DecodedImage:
    data = checked_file(path, max_file_bytes).read_bytes()
    with _pil_pixel_limit(max_image_pixels):
        img = Image.open(io.BytesIO(data))
    with img:
        _check_pixels(path, img.size, max_image_pixels)
        img.load()  # LOAD_TRUNCATED_IMAGES stays off: a short file is an OSError here
        if img.format == "JPEG" and _jpeg_truncated(path, data, img):
            raise DatasetError(path, "cannot read image (the JPEG data is truncated: its missing part would "
                                     "decode as flat grey)")
        orientation, mode = (_orientation(img) if oriented else 1), img.mode
        upright = ImageOps.exif_transpose(img) if orientation != 1 else img
        return DecodedImage(to_rgb8(upright), path, orientation, mode)


def read_image(path: str | os.PathLike[str], *, oriented: bool = True,
               max_image_pixels: int = MAX_IMAGE_PIXELS, max_file_bytes: int = MAX_FILE_BYTES) -> DecodedImage:
    """Fully decode ``path`` as 8-bit RGB: the one image decoder of the project (``ssd-detect``, ``Detector``
    and the dataset readers). ``oriented``: apply the EXIF orientation, as viewers do (the dataset readers pass
    False: annotations are made on the stored pixels). Only a regular file of at most ``max_file_bytes`` bytes
    is read (:func:`checked_file`), an image of more than ``max_image_pixels`` pixels is refused before its
    pixels are decoded, a truncated file is refused. Any failure is a :class:`DatasetError`
    ``"<path>: cannot read image (<reason>)"`` (``"<path>: image file is missing"`` for an absent file)."""
    path = Path(path)
    try:
        return _decode(path, oriented, max_image_pixels, max_file_bytes)
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        if isinstance(err, DatasetError):
            raise
        raise DatasetError(path, f"cannot read image ({err})") from None


def check_image_file(path: Path, full_decode: bool = False, max_file_bytes: int = MAX_FILE_BYTES) -> None:
    """Cheap integrity check of an image file (dataset scans): a regular file within ``max_file_bytes``; a JPEG
    starts with SOI and has EOI near the tail, a PNG starts with its signature and has the ``IEND`` chunk near
    the tail. A file failing it, or of another format, is fully decoded (:func:`read_image`) to confirm
    (``full_decode``: always). Raises :class:`DatasetError` naming the file."""
    if full_decode:
        read_image(path, oriented=False, max_file_bytes=max_file_bytes)
        return
    checked_file(path, max_file_bytes)
    try:
        with open(path, "rb") as fh:
            head = fh.read(len(_PNG_HEAD))
            fh.seek(max(0, os.fstat(fh.fileno()).st_size - _TAIL_BYTES))
            tail = fh.read(_TAIL_BYTES)
    except OSError as err:
        raise DatasetError(path, f"cannot read image ({err.strerror or err})") from None
    jpeg_ok = head.startswith(_JPEG_HEAD) and _JPEG_END in tail
    png_ok = head == _PNG_HEAD and _PNG_END in tail
    if not (jpeg_ok or png_ok):
        read_image(path, oriented=False, max_file_bytes=max_file_bytes)


def readable_suffixes() -> frozenset[str]:
    """Lower-case suffixes (``.jpg``, ``.webp``, ``.tif``, ...) of every format this PIL can open; stub formats
    (whose decoder is an external plug-in, e.g. HDF5, GRIB) are left out."""
    Image.init()
    openable = {fmt for fmt, (factory, _) in Image.OPEN.items()
                if not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))}
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in openable)


def _walk(folder: Path, recursive: bool, exclude: Optional[Path], dangling: list[Path]) -> Iterable[Path]:
    for entry in sorted(folder.iterdir()):
        if exclude is not None and entry.resolve() == exclude:
            continue  # the tool's own output folder inside the input folder: never read back as input
        if entry.is_dir():
            if recursive:
                yield from _walk(entry, recursive, exclude, dangling)
        elif entry.is_file():
            yield entry
        elif entry.is_symlink() and not entry.exists():
            dangling.append(entry)


def find_images(path: str | os.PathLike[str], recursive: bool = False,
                exclude: Optional[str | os.PathLike[str]] = None,
                skipped: Optional[list[tuple[str, str]]] = None) -> list[Path]:
    """``[path]`` for a file; for a folder its image files (:func:`readable_suffixes`), sorted by relative path,
    subfolders included when ``recursive``, ``exclude`` (a folder) skipped. A dangling symbolic link with an
    image suffix is not an image: it is logged (warning) and appended to ``skipped`` as ``(path, "dangling
    symbolic link")`` so a tool can count it. A missing path or a folder without images is a
    :class:`UserError`."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path}: no such image or folder")
    suffixes = readable_suffixes()
    skip = Path(exclude).resolve() if exclude is not None else None
    dangling: list[Path] = []
    images = sorted((p for p in _walk(path, recursive, skip, dangling) if p.suffix.lower() in suffixes),
                    key=lambda p: p.relative_to(path).as_posix())
    for link in sorted(p for p in dangling if p.suffix.lower() in suffixes):
        log.warning("skipping %s: dangling symbolic link (its target %s does not exist)", link, os.readlink(link))
        if skipped is not None:
            skipped.append((str(link), "dangling symbolic link"))
    if not images:
        hint = "" if recursive else "; --recursive also searches its subfolders"
        raise UserError(f"{path}: folder holds no image (no file with a suffix PIL reads: .jpg .png .webp .tif "
                        f".bmp .gif ...){hint}")
    return images
