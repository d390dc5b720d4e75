"""``ssd_torch.data.images``: the inference tools' decoder (EXIF orientation, 16-bit, formats, failures).

The EXIF expectations are written from the tag's definition (TIFF/EXIF: 2 mirror horizontal, 3 rotate 180,
4 mirror vertical, 5 mirror horizontal + rotate 270 CW, 6 rotate 90 CW, 7 mirror horizontal + rotate 90 CW,
8 rotate 270 CW), with NumPy, not with PIL's own transpose table.
"""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from ssd_torch.data.images import (ORIENTATIONS, find_images, read_image, readable_suffixes, scale_16_to_8,
                                   to_rgb8)
from ssd_torch.errors import DatasetError, UserError

# stored pixels -> displayed pixels (np.rot90 with k=1 turns counter-clockwise)
DISPLAY = {1: lambda a: a, 2: np.fliplr, 3: lambda a: np.rot90(a, 2), 4: np.flipud,
           5: lambda a: np.rot90(np.fliplr(a), 1), 6: lambda a: np.rot90(a, -1),
           7: lambda a: np.rot90(np.fliplr(a), -1), 8: lambda a: np.rot90(a, 1)}


@pytest.mark.parametrize("tag", sorted(DISPLAY))
def test_exif_orientation_gives_the_displayed_pixels(tmp_path: Path, tag: int) -> None:
    stored = np.random.default_rng(tag).integers(0, 256, (5, 7, 3), dtype=np.uint8)  # no symmetry
    exif = Image.Exif()
    exif[0x0112] = tag
    Image.fromarray(stored).save(tmp_path / "x.png", exif=exif.tobytes())
    decoded = read_image(tmp_path / "x.png")
    np.testing.assert_array_equal(np.asarray(decoded.image), DISPLAY[tag](stored))
    assert decoded.orientation == tag and decoded.image.mode == "RGB" and tag in ORIENTATIONS


def test_jpeg_with_orientation_6_comes_out_upright(tmp_path: Path) -> None:
    exif = Image.Exif()
    exif[0x0112] = 6
    Image.new("RGB", (40, 30), (200, 10, 10)).save(tmp_path / "phone.jpg", exif=exif.tobytes())
    decoded = read_image(tmp_path / "phone.jpg")
    assert decoded.size == (30, 40) and decoded.source_mode == "RGB"


def test_scale_16_to_8_by_hand() -> None:
    values = np.array([0, 128, 129, 257, 385, 386, 65535], dtype=np.uint16)
    assert scale_16_to_8(values).tolist() == [0, 0, 1, 1, 1, 2, 255]  # round(v / 257)
    with pytest.raises(ValueError, match="outside the 16-bit range"):
        scale_16_to_8(np.array([-1, 70000], dtype=np.int32))


@given(st.integers(0, 255))
def test_scale_16_to_8_inverts_the_8_to_16_bit_widening(v8: int) -> None:
    assert int(scale_16_to_8(np.array([v8 * 257], dtype=np.uint16))[0]) == v8


@pytest.mark.parametrize("mode", ["I;16", "I"])
def test_16_bit_images_are_scaled_not_clipped(tmp_path: Path, mode: str) -> None:
    gray8 = np.random.default_rng(0).integers(0, 256, (6, 9), dtype=np.uint8)
    wide = Image.fromarray(gray8.astype(np.uint16) * 257)
    wide = wide.convert(mode) if mode == "I" else wide
    assert wide.mode == mode
    np.testing.assert_array_equal(np.asarray(to_rgb8(wide)), np.repeat(gray8[:, :, None], 3, axis=2))
    path = tmp_path / ("g.png" if mode == "I;16" else "g.tif")  # 16-bit PNG; 32-bit integer TIFF
    wide.save(path)
    decoded = read_image(path)
    np.testing.assert_array_equal(np.asarray(decoded.image)[:, :, 0], gray8)
    assert decoded.source_mode.startswith("I")


def test_float_images_are_refused(tmp_path: Path) -> None:
    Image.fromarray(np.zeros((4, 4), dtype=np.float32)).save(tmp_path / "f.tif")
    with pytest.raises(DatasetError, match=r"f\.tif: cannot read image \(floating-point image"):
        read_image(tmp_path / "f.tif")


def test_unreadable_and_missing_files_name_the_file(tmp_path: Path) -> None:
    (tmp_path / "t.jpg").write_bytes(b"\xff\xd8\xff truncated")
    with pytest.raises(DatasetError, match=r"t\.jpg: cannot read image"):
        read_image(tmp_path / "t.jpg")
    with pytest.raises(DatasetError, match="image file is missing"):
        read_image(tmp_path / "none.png")


def test_find_images_takes_every_readable_suffix_and_recurses(tmp_path: Path) -> None:
    assert {".jpg", ".jpeg", ".png", ".webp", ".tif", ".tiff", ".bmp", ".gif"} <= readable_suffixes()
    assert ".txt" not in readable_suffixes() and ".h5" not in readable_suffixes()  # HDF5: a stub without plug-in
    for rel in ("b.WEBP", "a.tif", "c.txt", "sub/d.png", "out/e.png"):
        (tmp_path / rel).parent.mkdir(exist_ok=True)
        (tmp_path / rel).write_bytes(b"")
    names = lambda paths: [p.relative_to(tmp_path).as_posix() for p in paths]  # noqa: E731
    assert names(find_images(tmp_path)) == ["a.tif", "b.WEBP"]
    assert names(find_images(tmp_path, recursive=True, exclude=tmp_path / "out")) == ["a.tif", "b.WEBP", "sub/d.png"]
    assert find_images(tmp_path / "a.tif") == [tmp_path / "a.tif"]
    with pytest.raises(UserError, match="--recursive"):
        find_images(_empty(tmp_path))
    with pytest.raises(UserError, match="no such image or folder"):
        find_images(tmp_path / "missing")


def _empty(tmp_path: Path) -> Path:
    (tmp_path / "empty" / "deeper").mkdir(parents=True)
    return tmp_path / "empty"


def test_dataset_readers_scale_16_bit_images_too(tmp_path: Path) -> None:
    """The 16-bit rule is the decoder's, not ssd-detect's: a COCO export with a 16-bit grayscale PNG trained on
    an all-white image (``convert("RGB")`` saturates ``I;16``). The reader must see the 8-bit equivalent."""
    import json

    from ssd_torch.data.coco import CocoDataset

    gray8 = np.arange(48 * 64, dtype=np.uint32).reshape(48, 64) % 256
    Image.fromarray((gray8 * 257).astype(np.uint16)).save(tmp_path / "deep.png")
    Image.fromarray(gray8.astype(np.uint8), mode="L").save(tmp_path / "flat.png")
    doc = {"images": [{"id": 1, "file_name": "deep.png", "width": 64, "height": 48},
                      {"id": 2, "file_name": "flat.png", "width": 64, "height": 48}],
           "annotations": [{"id": k, "image_id": k, "category_id": 1, "bbox": [4, 4, 20, 20], "area": 400,
                            "iscrowd": 0} for k in (1, 2)],
           "categories": [{"id": 1, "name": "thing"}]}
    (tmp_path / "instances.json").write_text(json.dumps(doc))
    ds = CocoDataset(tmp_path, tmp_path / "instances.json")
    assert np.array_equal(np.asarray(ds.load_image(0)), np.asarray(ds.load_image(1)))
    assert torch.equal(ds[0][0], ds[1][0])
