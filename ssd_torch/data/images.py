"""Image files as a viewer shows them: the one decoder of the inference tools (``ssd-detect``, ``Detector``).

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

:func:`find_images` lists a folder's files whose suffix PIL registers for a format it can open
(:func:`readable_suffixes`), optionally recursively. Decoding failures are :class:`DatasetError` naming the file,
so a folder run can count and skip them.
"""
from __future__ import annotations

import os
from dataclasses import dataclass
from pathlib import Path
from typing import Iterable, Optional

import numpy as np
from PIL import Image, ImageFile, ImageOps

from ssd_torch.errors import DatasetError, UserError

__all__ = ["ORIENTATIONS", "DecodedImage", "describe_orientation", "to_rgb8", "scale_16_to_8", "read_image",
           "readable_suffixes", "find_images"]

#: EXIF orientation tag -> the transform a viewer (and :func:`read_image`) applies to the stored pixels
ORIENTATIONS: dict[int, str] = {
    1: "none", 2: "mirrored left-right", 3: "rotated 180 deg", 4: "mirrored top-bottom",
    5: "mirrored left-right, rotated 90 deg counter-clockwise", 6: "rotated 90 deg clockwise",
    7: "mirrored left-right, rotated 90 deg clockwise", 8: "rotated 90 deg counter-clockwise",
}
_EXIF_ORIENTATION = 0x0112
_SIXTEEN_BIT_MODES = ("I;16", "I;16L", "I;16B", "I;16N")


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


def read_image(path: str | os.PathLike[str]) -> DecodedImage:
    """Fully decode ``path`` as displayed (EXIF orientation applied) and as 8-bit RGB; any failure is a
    :class:`DatasetError` ``"<path>: cannot read image (<reason>)"``."""
    path = Path(path)
    try:
        with Image.open(path) as img:
            img.load()
            orientation, mode = _orientation(img), img.mode
            upright = ImageOps.exif_transpose(img) if orientation != 1 else img
            return DecodedImage(to_rgb8(upright), path, orientation, mode)
    except FileNotFoundError:
        raise DatasetError(path, "cannot read image (file not found)") from None
    except (OSError, SyntaxError, ValueError, Image.DecompressionBombError) as err:
        raise DatasetError(path, f"cannot read image ({err})") from None


def readable_suffixes() -> frozenset[str]:
    """Lower-case suffixes (``.jpg``, ``.webp``, ``.tif``, ...) of every format this PIL can open; stub formats
    (whose decoder is an external plug-in, e.g. HDF5, GRIB) are left out."""
    Image.init()
    openable = {fmt for fmt, (factory, _) in Image.OPEN.items()
                if not (isinstance(factory, type) and issubclass(factory, ImageFile.StubImageFile))}
    return frozenset(ext.lower() for ext, fmt in Image.registered_extensions().items() if fmt in openable)


def _walk(folder: Path, recursive: bool, exclude: Optional[Path]) -> Iterable[Path]:
    for entry in sorted(folder.iterdir()):
        if exclude is not None and entry.resolve() == exclude:
            continue  # the tool's own output folder inside the input folder: never read back as input
        if entry.is_dir():
            if recursive:
                yield from _walk(entry, recursive, exclude)
        elif entry.is_file():
            yield entry


def find_images(path: str | os.PathLike[str], recursive: bool = False,
                exclude: Optional[str | os.PathLike[str]] = None) -> list[Path]:
    """``[path]`` for a file; for a folder its image files (:func:`readable_suffixes`), sorted by relative path,
    subfolders included when ``recursive``, ``exclude`` (a folder) skipped. A missing path or a folder without
    images is a :class:`UserError`."""
    path = Path(path)
    if path.is_file():
        return [path]
    if not path.is_dir():
        raise UserError(f"{path}: no such image or folder")
    suffixes = readable_suffixes()
    skip = Path(exclude).resolve() if exclude is not None else None
    images = sorted((p for p in _walk(path, recursive, skip) if p.suffix.lower() in suffixes),
                    key=lambda p: p.relative_to(path).as_posix())
    if not images:
        hint = "" if recursive else "; --recursive also searches its subfolders"
        raise UserError(f"{path}: folder holds no image (no file with a suffix PIL reads: .jpg .png .webp .tif "
                        f".bmp .gif ...){hint}")
    return images
