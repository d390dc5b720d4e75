"""VOC reader: parsing, the normalisation formula, difficult handling, 07+12, and every bad-data case."""
from __future__ import annotations

import logging
from pathlib import Path

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st

from data_fixtures import GOOD, add_item, jpeg_bytes, make_root, voc_xml
from ssd_torch.data.collate import collate_detection
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_voc
from ssd_torch.data.voc import (VOC_CLASSES, DatasetError, VOCDataset, normalized_to_pixel, parse_annotation,
                                pixel_to_normalized)


def test_voc_classes_are_the_twenty() -> None:
    assert len(VOC_CLASSES) == 20 and len(set(VOC_CLASSES)) == 20
    assert VOC_CLASSES[0] == "aeroplane" and VOC_CLASSES[-1] == "tvmonitor"


def test_normalisation_hand_computed() -> None:
    # 100 x 200 image, box (11, 21, 60, 80): ((11-1)/100, (21-1)/200, 60/100, 80/200)
    got = pixel_to_normalized(np.array([[11, 21, 60, 80], [1, 1, 100, 200]]), 100, 200)
    np.testing.assert_allclose(got, [[0.1, 0.1, 0.6, 0.4], [0.0, 0.0, 1.0, 1.0]], rtol=0, atol=1e-15)


@given(st.integers(1, 2000), st.integers(1, 2000),
       st.lists(st.tuples(*[st.floats(0, 1, allow_nan=False)] * 4), min_size=0, max_size=5))
def test_normalisation_inverse(width: int, height: int, rows: list) -> None:
    boxes = np.array(rows, dtype=np.float64).reshape(-1, 4)
    back = pixel_to_normalized(normalized_to_pixel(boxes, width, height), width, height)
    np.testing.assert_allclose(back, boxes, rtol=0, atol=1e-12)


def test_parse_annotation_fields(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "a", [("dog", (11, 21, 40, 45), False), ("cat", (1, 1, 64, 48), True)])
    ann = parse_annotation(root / "Annotations" / "a.xml")
    assert (ann.image_id, ann.width, ann.height) == ("a", 64, 48)
    np.testing.assert_array_equal(ann.boxes, [[11, 21, 40, 45], [1, 1, 64, 48]])
    assert ann.boxes.dtype == np.float64
    assert ann.labels.tolist() == [VOC_CLASSES.index("dog") + 1, VOC_CLASSES.index("cat") + 1]
    assert ann.labels.dtype == np.int64 and ann.difficult.tolist() == [False, True]


def test_dataset_on_generated_tree(tmp_path: Path) -> None:
    root = generate_voc(tmp_path / "VOC2007", 6, 3, seed=0)
    ds = VOCDataset(root, "trainval", class_names=SYNTHETIC_CLASSES, keep_difficult=True)
    assert len(ds) == 6 and len(VOCDataset(root, "test", class_names=SYNTHETIC_CLASSES)) == 3
    for i in range(len(ds)):
        image, target = ds[i]
        ann = ds.annotation(i)
        assert image.shape == (3, 300, 300) and image.dtype == torch.float32
        want = pixel_to_normalized(ann.boxes, ann.width, ann.height)
        np.testing.assert_allclose(target["boxes"].numpy(), want, atol=1e-6)
        assert target["labels"].dtype == torch.int64
        assert target["labels"].tolist() == ann.labels.tolist()
        assert 1 <= int(target["labels"].min()) and int(target["labels"].max()) <= len(SYNTHETIC_CLASSES)


def test_difficult_excluded_from_training_kept_for_evaluation(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "a", [("dog", (11, 21, 40, 45), False), ("cat", (2, 2, 30, 30), True)])
    add_item(root, "b", [("cat", (2, 2, 30, 30), True)])  # every object difficult
    ds = VOCDataset(root, "trainval")
    assert len(ds) == 2 and ds.skipped == []
    assert ds[0][1]["labels"].tolist() == [VOC_CLASSES.index("dog") + 1]
    assert ds.annotation(0).difficult.tolist() == [False, True]
    _, empty = ds[1]  # all-difficult image: kept, empty training target
    assert empty["boxes"].shape == (0, 4) and empty["labels"].shape == (0,)
    assert ds.annotation(1).difficult.tolist() == [True]
    kept = VOCDataset(root, "trainval", keep_difficult=True)
    assert kept[0][1]["labels"].shape == (2,) and kept[1][1]["labels"].shape == (1,)


def test_keep_empty_keeps_images_without_objects(tmp_path: Path) -> None:
    """Default: an XML without <object> is bad data (today's rule). keep_empty=True: the image stays, as a
    negative (empty target, G = 0 annotation that the evaluator scores: detections on it are false positives)."""
    root = make_root(tmp_path)
    add_item(root, "a", GOOD)
    add_item(root, "empty", [])
    with pytest.raises(DatasetError, match="no objects"):
        VOCDataset(root, "trainval")
    ds = VOCDataset(root, "trainval", keep_empty=True)
    assert ds.image_ids == ["a", "empty"] and ds.skipped == []
    image, target = ds[1]
    assert image.shape == (3, 300, 300)
    assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    ann = ds.annotation(1)
    assert ann.boxes.shape == (0, 4) and ann.labels.shape == (0,) and ann.difficult.shape == (0,)


def test_concatenated_roots_07_plus_12(tmp_path: Path) -> None:
    r07 = generate_voc(tmp_path / "VOC2007", 4, 1, seed=1)
    r12 = generate_voc(tmp_path / "VOC2012", 3, 1, seed=2)
    both = VOCDataset([r07, r12], "trainval", class_names=SYNTHETIC_CLASSES)
    a = VOCDataset(r07, "trainval", class_names=SYNTHETIC_CLASSES)
    b = VOCDataset(r12, "trainval", class_names=SYNTHETIC_CLASSES)
    assert len(both) == 7
    np.testing.assert_array_equal(both.annotation(5).boxes, b.annotation(1).boxes)
    np.testing.assert_array_equal(both.annotation(2).boxes, a.annotation(2).boxes)
    # the synthetic ids repeat across the two roots: qualified so evaluator dictionaries stay one-to-one
    assert both.image_ids[0] == "VOC2007/000000" and both.image_ids[4] == "VOC2012/000000"
    assert len(set(both.image_ids)) == 7 and a.image_ids[0] == "000000"


def test_id_listed_twice(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "a", GOOD)
    add_item(root, "a", GOOD)
    with pytest.raises(DatasetError, match="image id 'a' is listed twice"):
        VOCDataset(root, "trainval")
    ds = VOCDataset(root, "trainval", skip_bad=True)
    assert ds.image_ids == ["a"] and len(ds.skipped) == 1


def test_same_folder_name_in_two_roots(tmp_path: Path) -> None:
    a = generate_voc(tmp_path / "x" / "VOC2007", 2, 0, seed=1)
    b = generate_voc(tmp_path / "y" / "VOC2007", 2, 0, seed=2)
    ids = VOCDataset([a, b], "trainval", class_names=SYNTHETIC_CLASSES).image_ids
    assert len(set(ids)) == 4 and ids[0] == f"{a}/000000"


def test_other_splits_and_second_column(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "a", GOOD, split="train")
    add_item(root, "b", GOOD, split="val")
    (root / "ImageSets" / "Main" / "dog_val.txt").write_text("b  1\n")
    assert VOCDataset(root, "train").image_ids == ["a"]
    assert VOCDataset(root, "dog_val").image_ids == ["b"]


# ---- bad data ------------------------------------------------------------------------------------------
def _truncated_jpeg() -> bytes:
    data = jpeg_bytes(64, 48)
    return data[: len(data) // 2]


def _corrupt_middle_jpeg() -> bytes:
    """Head and end-of-image marker intact (passes the cheap scan), entropy data destroyed."""
    data = bytearray(jpeg_bytes(64, 48))
    sos = data.find(b"\xff\xda")
    data[sos + 2: len(data) - 2] = b"\xff" * (len(data) - sos - 4)
    return bytes(data)


BAD_CASES = {
    "truncated jpeg": (dict(jpeg=_truncated_jpeg()), "cannot read image", "JPEGImages/bad.jpg"),
    "not an image": (dict(jpeg=b"hello, not a jpeg"), "cannot read image", "JPEGImages/bad.jpg"),
    "broken xml": (dict(xml="<annotation><size><width>64</wid"), "malformed XML", "Annotations/bad.xml"),
    "unknown class": (dict(objects=[("unicorn", (2, 2, 20, 20), False)]), "unknown class name 'unicorn'",
                      "Annotations/bad.xml"),
    "box outside": (dict(objects=[("dog", (2, 2, 65.01, 20), False)]), "outside", "Annotations/bad.xml"),
    "box outside negative": (dict(objects=[("dog", (-0.01, 2, 20, 20), False)]), "outside", "Annotations/bad.xml"),
    "zero area": (dict(objects=[("dog", (20, 5, 19, 30), False)]), "zero or negative area", "Annotations/bad.xml"),
    "negative area": (dict(objects=[("dog", (30, 5, 10, 30), False)]), "zero or negative area",
                      "Annotations/bad.xml"),
    "no objects": (dict(objects=[]), "no objects", "Annotations/bad.xml"),
    "missing size": (dict(xml="<annotation><object><name>dog</name></object></annotation>"), "missing <size>",
                     "Annotations/bad.xml"),
    "non-numeric box": (dict(xml=voc_xml("bad", 64, 48, [("dog", ("a", 2, 20, 20), False)])), "not a number",
                        "Annotations/bad.xml"),
    "missing image": (dict(jpeg=b""), "image file is missing", "JPEGImages/bad.jpg"),
    "missing xml": (dict(xml=""), "annotation file is missing", "Annotations/bad.xml"),
}


def _tree_with_bad(tmp_path: Path, case: str) -> Path:
    kwargs, _, _ = BAD_CASES[case]
    kwargs = dict(kwargs)
    objects = kwargs.pop("objects", GOOD)
    root = make_root(tmp_path)
    add_item(root, "good1", GOOD)
    add_item(root, "bad", objects, **kwargs)
    add_item(root, "good2", GOOD)
    return root


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_item_raises_naming_the_file(tmp_path: Path, case: str) -> None:
    root = _tree_with_bad(tmp_path, case)
    _, reason, path = BAD_CASES[case]
    with pytest.raises(DatasetError, match=reason) as info:
        VOCDataset(root, "trainval")
    assert str(info.value).startswith(str(root / path)) and info.value.path == str(root / path)
    assert isinstance(info.value, ValueError)


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_item_skipped_counted_logged(tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    root = _tree_with_bad(tmp_path, case)
    _, reason, path = BAD_CASES[case]
    with caplog.at_level(logging.WARNING, logger="ssd_torch.data.voc"):
        ds = VOCDataset(root, "trainval", skip_bad=True)
    assert ds.image_ids == ["good1", "good2"]
    assert len(ds.skipped) == 1 and ds.skipped[0][0] == str(root / path) and reason in ds.skipped[0][1]
    assert any(str(root / path) in rec.getMessage() for rec in caplog.records)


@pytest.mark.parametrize("xmax, ok", [(65.0, True), (64.0, True), (65.5, False)])
def test_box_tolerance_threshold(tmp_path: Path, xmax: float, ok: bool) -> None:
    """W = 64: xmax up to W + 1 (the 1-pixel tolerance) is accepted and clamped to 1.0, beyond is an error."""
    root = make_root(tmp_path)
    add_item(root, "a", [("dog", (0, 2, xmax, 20), False)])
    if not ok:
        with pytest.raises(DatasetError, match="outside"):
            VOCDataset(root, "trainval")
        return
    boxes = VOCDataset(root, "trainval")[0][1]["boxes"]
    assert float(boxes[0, 0]) == 0.0 and float(boxes[0, 2]) == 1.0  # (0 - 1) / W and W + 1 clamp to [0, 1]


def test_one_pixel_box_is_valid(tmp_path: Path) -> None:
    """xmin == xmax is one pixel wide in the devkit convention, not zero area."""
    root = make_root(tmp_path)
    add_item(root, "a", [("dog", (20, 5, 20, 5), False)])
    boxes = VOCDataset(root, "trainval")[0][1]["boxes"]
    np.testing.assert_allclose(boxes.numpy(), [[19 / 64, 4 / 48, 20 / 64, 5 / 48]], atol=1e-7)


def test_missing_split_file_raises_even_with_skip_bad(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "a", GOOD)
    for skip in (False, True):
        with pytest.raises(DatasetError, match="split file for split 'test'") as info:
            VOCDataset(root, "test", skip_bad=skip)
        assert "ImageSets/Main/test.txt" in str(info.value)


def test_corrupt_image_found_when_read(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "good1", GOOD)
    add_item(root, "bad", GOOD, jpeg=_corrupt_middle_jpeg())
    ds = VOCDataset(root, "trainval")  # the cheap scan passes this one
    assert len(ds) == 2
    with pytest.raises(DatasetError, match="cannot read image") as info:
        ds[1]
    assert str(root / "JPEGImages" / "bad.jpg") in str(info.value)
    with pytest.raises(DatasetError, match="cannot read image"):
        VOCDataset(root, "trainval", verify_images=True)  # the full scan finds it up front
    lenient = VOCDataset(root, "trainval", skip_bad=True)
    image, target = lenient[1]  # the next readable item stands in
    ref_image, ref_target = lenient[0]
    assert torch.equal(image, ref_image) and torch.equal(target["boxes"], ref_target["boxes"])
    assert lenient.skipped == [(str(root / "JPEGImages" / "bad.jpg"), lenient.skipped[0][1])]
    lenient[1]
    assert len(lenient.skipped) == 1  # recorded once, not on every epoch


def test_png_content_passes_the_cheap_scan_and_a_truncated_png_does_not(tmp_path: Path,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    """The scan knows PNG too (signature at the head, IEND chunk near the tail): a valid PNG is not decoded up
    front, a truncated one is decoded to confirm and found at construction."""
    import io

    from PIL import Image

    from ssd_torch.data import images

    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(0).integers(0, 256, (48, 64, 3), dtype=np.uint8)).save(buf, format="PNG")
    root = make_root(tmp_path)
    add_item(root, "png", GOOD, jpeg=buf.getvalue())
    with monkeypatch.context() as m:
        m.setattr(images, "read_image", lambda path, **kw: pytest.fail(f"the scan decoded {path}"))
        VOCDataset(root, "trainval")
    assert VOCDataset(root, "trainval")[0][0].shape == (3, 300, 300)
    add_item(root, "cut", GOOD, jpeg=buf.getvalue()[: len(buf.getvalue()) // 2])
    with pytest.raises(DatasetError, match="cut.jpg: cannot read image"):
        VOCDataset(root, "trainval")


def test_image_size_disagreeing_with_xml(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "a", GOOD, jpeg=jpeg_bytes(50, 48))
    with pytest.raises(DatasetError, match="image is 50x48 but a.xml says 64x48"):
        VOCDataset(root, "trainval")[0]


def test_worker_error_names_the_file(tmp_path: Path) -> None:
    """Inside a DataLoader worker the error crosses the process boundary with the file name."""
    root = make_root(tmp_path)
    add_item(root, "bad", GOOD, jpeg=_corrupt_middle_jpeg())
    loader = torch.utils.data.DataLoader(VOCDataset(root, "trainval"), batch_size=1, num_workers=1,
                                         collate_fn=collate_detection)
    with pytest.raises(DatasetError, match="bad.jpg: cannot read image"):
        next(iter(loader))


def test_index_out_of_range(tmp_path: Path) -> None:
    root = make_root(tmp_path)
    add_item(root, "a", GOOD)
    ds = VOCDataset(root, "trainval")
    with pytest.raises(IndexError):
        ds[1]
    assert torch.equal(ds[-1][0], ds[0][0])


def test_the_same_root_given_twice_is_refused(tmp_path) -> None:
    """Reproduces: ``ssd-eval --data ROOT ROOT`` said 24 images but scored 12 (every image read twice)."""
    from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_voc
    from ssd_torch.data.voc import VOCDataset
    from ssd_torch.errors import DatasetError

    root = generate_voc(tmp_path / "VOC2007", 2, 2, seed=0, image_size=(64, 48))
    with pytest.raises(DatasetError, match="given twice"):
        VOCDataset([root, tmp_path / "VOC2007" / ".." / "VOC2007"], "test", class_names=SYNTHETIC_CLASSES)
    assert len(VOCDataset([root], "test", class_names=SYNTHETIC_CLASSES)) == 2
