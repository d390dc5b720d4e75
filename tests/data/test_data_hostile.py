"""Issue #19 section 3: hostile or broken data files give one-line DatasetErrors (or counted skips), never an
unbounded read, a file outside the image folder, a traceback, a raw warning or a silent wrong answer."""
from __future__ import annotations

import io
import json
import os
import warnings
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from data_fixtures import GOOD, add_item, jpeg_bytes, make_root, voc_xml
from ssd_torch.data import images as images_mod
from ssd_torch.data.coco import CocoDataset
from ssd_torch.data.images import find_images, read_image
from ssd_torch.data.voc import VOCDataset, parse_annotation
from ssd_torch.errors import DatasetError
from test_data_coco import GOOD_ANNS, GOOD_IMAGES, _img, write_coco


def _one_line(err: DatasetError) -> str:
    text = str(err)
    assert "\n" not in text and "Traceback" not in text
    return text


# ---- COCO file_name ---------------------------------------------------------------------------------------
def test_coco_file_name_must_stay_inside_the_image_folder(tmp_path: Path) -> None:
    """Defect: ``../`` and absolute file names read files outside the image folder silently."""
    outside = tmp_path / "secret.jpg"  # next to the image folder: ../secret.jpg from it
    outside.write_bytes(jpeg_bytes(64, 48))
    for name in ("../secret.jpg", str(outside)):
        images_dir, path = write_coco(tmp_path, [_img(3), {**_img(9), "file_name": name}], GOOD_ANNS,
                                      image_bytes={name: b""})
        with pytest.raises(DatasetError, match="outside the image folder.*allow_outside_images") as info:
            CocoDataset(images_dir, path)
        assert "image id 9" in _one_line(info.value)
        skipping = CocoDataset(images_dir, path, skip_bad=True)
        assert skipping.image_ids == ["3"] and len(skipping.skipped) == 1
        allowed = CocoDataset(images_dir, path, allow_outside_images=True)
        assert allowed.image_ids == ["3", "9"] and allowed[1][0].shape == (3, 300, 300)


def test_coco_file_name_dev_zero_is_not_read(tmp_path: Path) -> None:
    """Defect: ``"file_name": "/dev/zero"`` made ssd-eval / ssd-train allocate memory without bound."""
    images_dir, path = write_coco(tmp_path, [_img(3), {**_img(9), "file_name": "zero.jpg"}], GOOD_ANNS,
                                  image_bytes={"zero.jpg": b""})
    os.symlink("/dev/zero", images_dir / "zero.jpg")
    with pytest.raises(DatasetError, match="not a regular file") as info:
        CocoDataset(images_dir, path)
    _one_line(info.value)
    assert CocoDataset(images_dir, path, skip_bad=True).image_ids == ["3"]
    with pytest.raises(DatasetError, match="not a regular file"):
        read_image("/dev/zero")


def test_coco_file_name_with_nul_byte(tmp_path: Path) -> None:
    images_dir, path = write_coco(tmp_path, [_img(3), {**_img(9), "file_name": "9\x00.jpg"}], GOOD_ANNS,
                                  image_bytes={"9\x00.jpg": b""})
    with pytest.raises(DatasetError, match="NUL byte") as info:
        CocoDataset(images_dir, path)
    assert "image id 9" in _one_line(info.value)


def test_file_size_is_bounded_before_decoding(tmp_path: Path) -> None:
    (tmp_path / "a.jpg").write_bytes(jpeg_bytes(64, 48))
    assert read_image(tmp_path / "a.jpg").size == (64, 48)
    with pytest.raises(DatasetError, match="bytes, above the limit .*max_file_bytes"):
        read_image(tmp_path / "a.jpg", max_file_bytes=100)
    assert images_mod.MAX_FILE_BYTES >= 2 ** 28


# ---- COCO JSON ----------------------------------------------------------------------------------------------
@pytest.mark.parametrize("doc, match", [
    ("[" * 100_000 + "]" * 100_000, "nested too deeply"),
    ({"images": GOOD_IMAGES, "annotations": [{**GOOD_ANNS[0], "bbox": [1, "2", 3, 4]}], "categories":
      [{"id": 12, "name": "dog"}]}, r"'bbox' must be \[x, y, w, h\] numbers"),
    ({"images": [{**GOOD_IMAGES[0], "id": True}], "annotations": [], "categories": [{"id": 12, "name": "dog"}]},
     "'id' must be an integer, got True"),
])
def test_coco_json_defects_are_one_line_errors(tmp_path: Path, doc, match) -> None:
    """Defects: RecursionError traceback; a string inside a bbox accepted; ``"id": true`` misreported."""
    images_dir, path = write_coco(tmp_path, GOOD_IMAGES, GOOD_ANNS,
                                  doc=doc if isinstance(doc, str) else json.dumps(doc))
    with pytest.raises(DatasetError, match=match) as info:
        CocoDataset(images_dir, path)
    assert info.value.path == str(path)
    _one_line(info.value)


# ---- VOC XML and split files ------------------------------------------------------------------------------
def _xml_with(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "a.xml"
    path.write_text(text)
    return path


@pytest.mark.parametrize("field", ["xmin", "ymin", "xmax", "ymax"])
@pytest.mark.parametrize("value", ["NaN", "nan", "inf", "-inf"])
def test_voc_box_coordinates_must_be_finite(tmp_path: Path, field: str, value: str) -> None:
    """Defect: ``<xmin>NaN</xmin>`` passed (trained as background, evaluated as unmatched ground truth)."""
    xml = voc_xml("a", 64, 48, GOOD).replace(f"<{field}>", f"<{field}>{value}<!--").replace(
        f"</{field}>", f"--></{field}>")
    with pytest.raises(DatasetError, match=f"<{field}> .* is not a finite number"):
        parse_annotation(_xml_with(tmp_path, xml))


@pytest.mark.parametrize("value", ["nan", "inf", "NaN", "-inf"])
def test_voc_size_must_be_finite(tmp_path: Path, value: str) -> None:
    """Defect: ``<width>nan</width>`` was a ValueError traceback, ``inf`` an OverflowError."""
    xml = voc_xml("a", 64, 48, GOOD).replace("<width>64</width>", f"<width>{value}</width>")
    with pytest.raises(DatasetError, match="<width> .* is not a finite number") as info:
        parse_annotation(_xml_with(tmp_path, xml))
    _one_line(info.value)


def test_voc_xml_with_unknown_encoding(tmp_path: Path) -> None:
    xml = '<?xml version="1.0" encoding="no-such-codec"?>' + voc_xml("a", 64, 48, GOOD)
    with pytest.raises(DatasetError, match="a.xml: .*encoding") as info:
        parse_annotation(_xml_with(tmp_path, xml))
    _one_line(info.value)


def test_voc_split_file_with_nul_byte(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "a", GOOD)
    with open(root / "ImageSets" / "Main" / "trainval.txt", "a") as fh:
        fh.write("b\x00c\n")
    with pytest.raises(DatasetError, match="trainval.txt: .*NUL byte") as info:
        VOCDataset(root, "trainval", skip_bad=True)
    _one_line(info.value)


# ---- truncated JPEG ---------------------------------------------------------------------------------------
def _truncated_with_eoi(width: int = 64, height: int = 48) -> bytes:
    data = jpeg_bytes(width, height)
    return data[: len(data) // 2] + b"\xff\xd9"


def test_truncated_jpeg_with_end_marker_is_bad_data(tmp_path: Path) -> None:
    """Defect: a JPEG cut short that still ends with FFD9 decoded its missing part as flat grey and was used."""
    (tmp_path / "cut.jpg").write_bytes(_truncated_with_eoi())
    with pytest.raises(DatasetError, match="cut.jpg: cannot read image .*truncated"):
        read_image(tmp_path / "cut.jpg")
    root = make_root(tmp_path)
    add_item(root, "a", GOOD)
    add_item(root, "cut", GOOD, jpeg=_truncated_with_eoi())
    with pytest.raises(DatasetError, match="cut.jpg: .*truncated"):
        VOCDataset(root, "trainval")[1]
    skipping = VOCDataset(root, "trainval", skip_bad=True)
    skipping[1]  # the next readable item stands in
    assert [Path(p).name for p, _ in skipping.skipped] == ["cut.jpg"]


@pytest.mark.parametrize("grey", [False, True])
def test_complete_jpegs_are_not_called_truncated(tmp_path: Path, grey: bool) -> None:
    """The truncation check never refuses a complete file, also one whose last block is flat grey 128."""
    arr = np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)
    if grey:
        arr[16:] = 128
    for kw in ({"quality": 90}, {"quality": 75, "progressive": True}, {"quality": 50, "optimize": True}):
        buf = io.BytesIO()
        Image.fromarray(arr).save(buf, format="JPEG", **kw)
        (tmp_path / "ok.jpg").write_bytes(buf.getvalue() + b"trailing bytes")
        assert read_image(tmp_path / "ok.jpg").size == (64, 48)


# ---- pixel limit ------------------------------------------------------------------------------------------
def test_pixel_limit_is_ours_with_a_message_and_no_raw_warning(tmp_path: Path) -> None:
    """Defects: PIL's DecompressionBombWarning leaked for a 108 MP photo; a 192 MP one was refused with no
    override. Here the limit is scaled down: a 100 x 100 image against limits of 5,000 and 20,000 pixels."""
    Image.new("RGB", (100, 100), (10, 20, 30)).save(tmp_path / "big.png")
    with pytest.raises(DatasetError, match=r"big.png: .*10000 pixels.*max_image_pixels"):
        read_image(tmp_path / "big.png", max_image_pixels=5_000)
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        assert read_image(tmp_path / "big.png", max_image_pixels=20_000).size == (100, 100)
    old = Image.MAX_IMAGE_PIXELS
    try:  # PIL's own (global) limit neither warns nor refuses below ours
        Image.MAX_IMAGE_PIXELS = 6_000
        with warnings.catch_warnings():
            warnings.simplefilter("error")
            assert read_image(tmp_path / "big.png", max_image_pixels=20_000).size == (100, 100)
    finally:
        Image.MAX_IMAGE_PIXELS = old
    assert Image.MAX_IMAGE_PIXELS == old
    assert images_mod.MAX_IMAGE_PIXELS >= 200_000_000  # a 192 MP photo reads by default


# ---- dangling symlinks --------------------------------------------------------------------------------------
def test_find_images_lists_dangling_symlinks_as_skipped(tmp_path: Path, caplog) -> None:
    """Defect: a dangling symlink in an image folder was skipped silently."""
    Image.new("RGB", (8, 8)).save(tmp_path / "a.png")
    os.symlink(tmp_path / "gone.png", tmp_path / "b.png")
    skipped: list[tuple[str, str]] = []
    with caplog.at_level("WARNING"):
        assert find_images(tmp_path, skipped=skipped) == [tmp_path / "a.png"]
    assert skipped == [(str(tmp_path / "b.png"), "dangling symbolic link")]
    assert "b.png" in caplog.text
