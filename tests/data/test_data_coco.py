"""COCO reader: pixel conventions, category mapping (non-contiguous ids, by name), crowd regions, images without
objects, every bad-data case, the VOC reader's contract on the same synthetic scenes, and the COCO writer."""
from __future__ import annotations

import io
import json
import logging
import re
from pathlib import Path
from typing import Any

import numpy as np
import pytest
import torch
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from data_fixtures import jpeg_bytes
from ssd_torch.cli import synthetic as synthetic_cli
from ssd_torch.data import synthetic
from ssd_torch.data.coco import (CocoDataset, coco_file_categories, coco_to_normalized, coco_to_voc_pixels,
                                 read_coco_file, voc_pixels_to_coco)
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_coco, generate_voc, is_complete_coco
from ssd_torch.data.voc import DatasetError, VOCDataset, pixel_to_normalized

# non-contiguous ids, listed out of id order: labels follow the ids (7 -> 1 "cat", 12 -> 2 "dog", 40 -> 3 "bird")
CATS = [{"id": 40, "name": "bird"}, {"id": 7, "name": "cat"}, {"id": 12, "name": "dog"}]


def _ann(aid: int, image_id: int, cat: int, bbox: list, **extra: Any) -> dict:
    return {"id": aid, "image_id": image_id, "category_id": cat, "bbox": bbox, **extra}


def _img(iid: int, w: int = 64, h: int = 48) -> dict:
    return {"id": iid, "file_name": f"{iid}.jpg", "width": w, "height": h}


def write_coco(base: Path, images: list[dict], annotations: list[dict], categories: list[dict] = CATS,
               image_bytes: dict[str, bytes] | None = None, doc: Any = None) -> tuple[Path, Path]:
    """``(images dir, instances.json)`` under ``base``; each image gets a JPEG of its size unless
    ``image_bytes[file_name]`` overrides it (``b""``: not written). ``doc`` replaces the whole JSON."""
    images_dir = base / "images"
    images_dir.mkdir(parents=True, exist_ok=True)
    for k, rec in enumerate(images):
        data = (image_bytes or {}).get(rec["file_name"])
        if data != b"":
            (images_dir / rec["file_name"]).write_bytes(data or jpeg_bytes(rec["width"], rec["height"], seed=k))
    path = base / "instances.json"
    content = {"images": images, "annotations": annotations, "categories": categories} if doc is None else doc
    path.write_text(content if isinstance(content, str) else json.dumps(content))
    return images_dir, path


GOOD_IMAGES = [_img(3), _img(9)]
GOOD_ANNS = [_ann(1, 3, 12, [10.5, 20.0, 30.0, 20.25]), _ann(2, 3, 40, [0, 0, 64, 48]), _ann(5, 9, 7, [1, 2, 3, 4])]


# ---- conventions ------------------------------------------------------------------------------------------
def test_conversions_hand_computed() -> None:
    xywh = np.array([[10.0, 20.0, 30.0, 5.0], [0.0, 0.0, 64.0, 48.0]])
    np.testing.assert_array_equal(coco_to_voc_pixels(xywh), [[11, 21, 40, 25], [1, 1, 64, 48]])
    np.testing.assert_array_equal(voc_pixels_to_coco(coco_to_voc_pixels(xywh)), xywh)
    np.testing.assert_allclose(coco_to_normalized(xywh, 64, 48),
                               [[10 / 64, 20 / 48, 40 / 64, 25 / 48], [0, 0, 1, 1]], rtol=0, atol=1e-15)
    # the VOC scorer's box of a COCO box normalises back to the COCO box (the data contract's formula)
    np.testing.assert_allclose(pixel_to_normalized(coco_to_voc_pixels(xywh), 64, 48), coco_to_normalized(xywh, 64, 48),
                               rtol=0, atol=1e-15)


_coord = st.integers(0, 4000).map(lambda v: v / 2)  # integer and half-integer pixels: exact in float64


@given(st.lists(st.tuples(_coord, _coord, _coord, _coord), max_size=6),
       st.lists(st.floats(0, 2000, allow_nan=False), min_size=4, max_size=4))
def test_conversion_round_trips(rows: list, real: list) -> None:
    xywh = np.array(rows, dtype=np.float64).reshape(-1, 4)
    np.testing.assert_array_equal(voc_pixels_to_coco(coco_to_voc_pixels(xywh)), xywh)  # exact
    arbitrary = np.array([real])
    np.testing.assert_allclose(voc_pixels_to_coco(coco_to_voc_pixels(arbitrary)), arbitrary, rtol=0, atol=1e-12)


# ---- classes, crowd, empty images ---------------------------------------------------------------------------
def test_non_contiguous_ids_map_to_labels_in_id_order(tmp_path: Path) -> None:
    images_dir, path = write_coco(tmp_path, GOOD_IMAGES, GOOD_ANNS)
    ds = CocoDataset(images_dir, path)
    assert ds.class_names == ("cat", "dog", "bird") == coco_file_categories(path)
    assert ds.category_ids == (7, 12, 40) and ds.image_ids == ["3", "9"] and len(ds) == 2
    ann = ds.annotation(0)
    assert (ann.image_id, ann.width, ann.height) == ("3", 64, 48)
    assert ann.labels.tolist() == [2, 3] and ann.difficult.tolist() == [False, False]
    np.testing.assert_array_equal(ann.boxes, [[11.5, 21.0, 40.5, 40.25], [1, 1, 64, 48]])
    boxes, labels = ds.target(0)
    assert boxes.dtype == torch.float32 and labels.dtype == torch.int64 and labels.tolist() == [2, 3]
    np.testing.assert_allclose(boxes.numpy(), [[10.5 / 64, 20 / 48, 40.5 / 64, 40.25 / 48], [0, 0, 1, 1]], atol=1e-7)
    image, target = ds[1]
    assert image.shape == (3, 300, 300) and target["labels"].tolist() == [1]
    rec = ds.coco_record(0)
    assert (rec.image_id, rec.file_name, rec.width, rec.height) == (3, "3.jpg", 64, 48)
    assert rec.annotation_ids.tolist() == [1, 2] and rec.category_ids.tolist() == [12, 40]
    np.testing.assert_array_equal(rec.bboxes, [[10.5, 20.0, 30.0, 20.25], [0, 0, 64, 48]])
    np.testing.assert_array_equal(rec.areas, [30.0 * 20.25, 64 * 48])  # no 'area' in the file: the box's
    assert ds.image_path(1) == images_dir / "9.jpg" and ds.load_image(1).size == (64, 48)
    with pytest.raises(ValueError):
        ann.boxes[0, 0] = 5.0  # the parsed arrays are shared: read-only


def test_class_names_match_by_name(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    cats = CATS + [{"id": 99, "name": "unused"}]
    images_dir, path = write_coco(tmp_path, GOOD_IMAGES, GOOD_ANNS, categories=cats)
    with caplog.at_level(logging.INFO, logger="ssd_torch.data.coco"):
        ds = CocoDataset(images_dir, path, class_names=["bird", "horse", "dog", "cat"])
    assert ds.class_names == ("bird", "horse", "dog", "cat") and ds.category_ids == (40, None, 12, 7)
    assert ds.annotation(0).labels.tolist() == [3, 1] and ds.annotation(1).labels.tolist() == [4]
    assert any("unused" in r.getMessage() for r in caplog.records)  # a category without annotations: ignored
    with pytest.raises(ValueError, match="class_names must be unique"):
        CocoDataset(images_dir, path, class_names=["bird", "dog", "cat", "dog"])
    for skip in (False, True):  # a used category outside the class list is the wrong class list, not bad data
        with pytest.raises(DatasetError, match="category 'dog' \\(id 12\\) is not one of the class names") as info:
            CocoDataset(images_dir, path, class_names=["bird", "cat"], skip_bad=skip)
        assert str(info.value).startswith(str(path))


def test_crowd_regions_and_images_without_objects(tmp_path: Path) -> None:
    images = [_img(1), _img(2), _img(3)]
    anns = [_ann(1, 1, 7, [5, 5, 20, 20]), _ann(2, 1, 12, [30, 10, 30, 30], iscrowd=1, area=500.0),
            _ann(3, 3, 12, [0, 0, 10, 10], iscrowd=1)]  # image 2: nothing; image 3: only a crowd region
    images_dir, path = write_coco(tmp_path, images, anns)
    ds = CocoDataset(images_dir, path)
    assert ds.image_ids == ["1", "2", "3"] and ds.skipped == []
    assert ds.target(0)[1].tolist() == [1] and ds.annotation(0).difficult.tolist() == [False, True]
    for i in (1, 2):
        _, target = ds[i]
        assert target["boxes"].shape == (0, 4) and target["labels"].shape == (0,)
    assert ds.annotation(1).boxes.shape == (0, 4) and ds.annotation(2).difficult.tolist() == [True]
    assert ds.coco_record(0).iscrowd.tolist() == [False, True] and ds.coco_record(0).areas.tolist() == [400, 500]
    kept = CocoDataset(images_dir, path, keep_crowd=True)
    assert kept.target(0)[1].tolist() == [1, 2] and kept.target(2)[1].tolist() == [2]


def test_box_tolerance_and_clamping(tmp_path: Path) -> None:
    """A box may stick out by BOX_TOLERANCE_PX (1 pixel) and is clamped to the image in the target."""
    images_dir, path = write_coco(tmp_path, [_img(1)], [_ann(1, 1, 7, [-1.0, 0, 65.0, 49.0])])
    boxes, _ = CocoDataset(images_dir, path).target(0)
    assert boxes.tolist() == [[0.0, 0.0, 1.0, 1.0]]


# ---- bad data ---------------------------------------------------------------------------------------------
def _png_bytes(w: int, h: int) -> bytes:
    buf = io.BytesIO()
    Image.fromarray(np.random.default_rng(1).integers(0, 256, (h, w, 3), dtype=np.uint8)).save(buf, format="PNG")
    return buf.getvalue()


# case -> (images, annotations, image bytes, reason, path of the message: "json" or the image file name)
BAD_CASES: dict[str, tuple] = {
    "missing image": (GOOD_IMAGES, GOOD_ANNS, {"9.jpg": b""}, "image file is missing \\(image id 9", "9.jpg"),
    "unreadable jpeg": (GOOD_IMAGES, GOOD_ANNS, {"9.jpg": jpeg_bytes(64, 48)[:300]}, "cannot read image", "9.jpg"),
    "not an image": (GOOD_IMAGES, GOOD_ANNS, {"9.jpg": b"hello"}, "cannot read image", "9.jpg"),
    "unreadable png": ([_img(3), {**_img(9), "file_name": "9.png"}], GOOD_ANNS,
                       {"9.png": _png_bytes(64, 48)[:200]}, "cannot read image", "9.png"),
    "box outside": (GOOD_IMAGES, GOOD_ANNS + [_ann(6, 9, 7, [40, 2, 25.5, 4])],
                    None, "annotation id 6 \\(image id 9\\): box .* lies outside the 64x48 image", "json"),
    "box outside negative": (GOOD_IMAGES, GOOD_ANNS + [_ann(6, 9, 7, [-1.5, 2, 5, 4])], None, "outside", "json"),
    "zero area": (GOOD_IMAGES, GOOD_ANNS + [_ann(6, 9, 7, [4, 4, 0, 5])], None,
                  "annotation id 6 \\(image id 9\\): box .* has zero or negative width", "json"),
    "negative height": (GOOD_IMAGES, GOOD_ANNS + [_ann(6, 9, 7, [4, 4, 3, -2])], None, "zero or negative", "json"),
    "non-finite box": (GOOD_IMAGES, GOOD_ANNS + [_ann(6, 9, 7, [4, 4, float("nan"), 2])], None, "not finite",
                       "json"),
    "unknown category": (GOOD_IMAGES, GOOD_ANNS + [_ann(6, 9, 8, [4, 4, 3, 2])], None,
                         "annotation id 6 \\(image id 9\\): unknown category id 8", "json"),
    "duplicate annotation id": (GOOD_IMAGES, GOOD_ANNS[:2] + [_ann(1, 9, 7, [1, 2, 3, 4])], None,
                                "annotation id 1 \\(image id 3\\): its id is used by another", "json"),
    "duplicate image id": ([_img(3), _img(9), {**_img(9), "file_name": "9b.jpg"}], GOOD_ANNS, None,
                           "image id 9 is listed more than once", "json"),
    "invalid size": ([_img(3), _img(9, w=0)], GOOD_ANNS[:2], {"9.jpg": jpeg_bytes(64, 48)},
                     "image id 9 has an invalid size 0x48", "json"),
}
# images left and records made when the bad data is skipped: a duplicated annotation id takes both images that
# use it, a duplicated image id every entry with it
KEPT = {"duplicate annotation id": []}
RECORDS = {"duplicate annotation id": 2, "duplicate image id": 2}


def _bad_tree(tmp_path: Path, case: str) -> tuple[Path, Path]:
    images, anns, image_bytes, _, _ = BAD_CASES[case]
    return write_coco(tmp_path, images, anns, image_bytes=image_bytes)


def _message_path(images_dir: Path, path: Path, where: str) -> Path:
    return path if where == "json" else images_dir / where


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_data_raises_naming_the_file_and_id(tmp_path: Path, case: str) -> None:
    images_dir, path = _bad_tree(tmp_path, case)
    reason, where = BAD_CASES[case][3:]
    with pytest.raises(DatasetError, match=reason) as info:
        CocoDataset(images_dir, path)
    assert info.value.path == str(_message_path(images_dir, path, where))
    assert str(info.value).startswith(info.value.path + ": ")


@pytest.mark.parametrize("case", sorted(BAD_CASES))
def test_bad_data_skipped_counted_logged(tmp_path: Path, case: str, caplog: pytest.LogCaptureFixture) -> None:
    images_dir, path = _bad_tree(tmp_path, case)
    reason, where = BAD_CASES[case][3:]
    with caplog.at_level(logging.WARNING, logger="ssd_torch.data.coco"):
        ds = CocoDataset(images_dir, path, skip_bad=True)
    assert ds.image_ids == KEPT.get(case, ["3"])
    expected = RECORDS.get(case, 1)
    assert len(ds.skipped) == expected and all(p == str(_message_path(images_dir, path, where)) for p, _ in ds.skipped)
    assert any(re.search(reason, r) for _, r in ds.skipped)
    assert sum(info.levelno == logging.WARNING for info in caplog.records) == expected
    for i in range(len(ds)):
        assert ds[i][1]["labels"].tolist() == [2, 3]  # what is left is the good image, complete


def test_annotation_of_an_unknown_image(tmp_path: Path) -> None:
    images_dir, path = write_coco(tmp_path, GOOD_IMAGES, GOOD_ANNS + [_ann(6, 77, 7, [1, 1, 2, 2])])
    with pytest.raises(DatasetError, match="annotation id 6 refers to image id 77, which is not in 'images'"):
        CocoDataset(images_dir, path)
    ds = CocoDataset(images_dir, path, skip_bad=True)
    assert ds.image_ids == ["3", "9"] and len(ds.skipped) == 1  # only that annotation goes


FILE_ERRORS: dict[str, tuple[Any, str]] = {
    "not json": ("{'images': [", "not valid JSON"),
    "a list": ([1, 2], "the JSON is a list"),
    "no categories": ({"images": [], "annotations": []}, "no 'categories' list"),
    "annotations not a list": ({"images": [], "annotations": {}, "categories": []}, "no 'annotations' list"),
    "record without key": ({"images": GOOD_IMAGES, "annotations": [{"id": 4, "image_id": 3, "category_id": 7}],
                            "categories": CATS}, "annotation #0 \\(id 4\\) has no 'bbox'"),
    "float id": ({"images": [{**_img(3), "id": 3.5}], "annotations": [], "categories": CATS},
                 "image #0 \\(id 3.5\\): 'id' must be an integer"),
    "short bbox": ({"images": GOOD_IMAGES, "annotations": GOOD_ANNS + [_ann(8, 3, 7, [1, 2, 3])],
                    "categories": CATS}, "annotation #3 \\(id 8\\): 'bbox' must be \\[x, y, w, h\\] numbers"),
    "bad iscrowd": ({"images": GOOD_IMAGES, "annotations": [_ann(8, 3, 7, [1, 2, 3, 4], iscrowd=2)],
                     "categories": CATS}, "'iscrowd' must be 0 or 1, got 2"),
    "image not an object": ({"images": ["3.jpg"], "annotations": [], "categories": CATS}, "image #0 is a str"),
    "duplicate category id": ({"images": [], "annotations": [], "categories": CATS + [{"id": 7, "name": "x"}]},
                              "category id 7 appears 2 times"),
    "duplicate category name": ({"images": [], "annotations": [], "categories": CATS + [{"id": 8, "name": "dog"}]},
                                "category name 'dog' appears 2 times \\(ids \\[8, 12\\]\\)"),
}


@pytest.mark.parametrize("case", sorted(FILE_ERRORS))
def test_file_level_errors_raise_even_with_skip_bad(tmp_path: Path, case: str) -> None:
    doc, reason = FILE_ERRORS[case]
    images_dir, path = write_coco(tmp_path, [], [], doc=doc)
    for skip in (False, True):
        with pytest.raises(DatasetError, match=reason) as info:
            CocoDataset(images_dir, path, skip_bad=skip)
        assert info.value.path == str(path)


def test_missing_file_and_folder(tmp_path: Path) -> None:
    with pytest.raises(DatasetError, match="annotation file is missing"):
        CocoDataset(tmp_path, tmp_path / "nope.json")
    _, path = write_coco(tmp_path, GOOD_IMAGES, GOOD_ANNS)
    with pytest.raises(DatasetError, match="image folder does not exist") as info:
        CocoDataset(tmp_path / "elsewhere", path)
    assert info.value.path == str(tmp_path / "elsewhere")
    assert len(CocoDataset(tmp_path / "elsewhere", path, check_images=False)) == 2  # JSON only (benchmarks)


def test_corrupt_image_found_when_read_and_size_mismatch(tmp_path: Path) -> None:
    data = bytearray(jpeg_bytes(64, 48))
    sos = data.find(b"\xff\xda")
    data[sos + 2: len(data) - 2] = b"\xff" * (len(data) - sos - 4)  # markers intact: passes the cheap scan
    images_dir, path = write_coco(tmp_path, GOOD_IMAGES, GOOD_ANNS, image_bytes={"9.jpg": bytes(data)})
    ds = CocoDataset(images_dir, path)
    with pytest.raises(DatasetError, match="9.jpg: cannot read image"):
        ds[1]
    with pytest.raises(DatasetError, match="cannot read image"):
        CocoDataset(images_dir, path, verify_images=True)
    lenient = CocoDataset(images_dir, path, skip_bad=True)
    assert torch.equal(lenient[1][0], lenient[0][0]) and len(lenient.skipped) == 1  # the next item stands in
    (images_dir / "9.jpg").write_bytes(jpeg_bytes(50, 48))
    with pytest.raises(DatasetError, match="image is 50x48 but instances.json \\(image id 9\\) says 64x48"):
        CocoDataset(images_dir, path)[1]


def test_parse_is_cached_until_the_file_changes(tmp_path: Path) -> None:
    images_dir, path = write_coco(tmp_path, GOOD_IMAGES, GOOD_ANNS)
    assert read_coco_file(path).images is read_coco_file(path).images
    doc = json.loads(path.read_text())
    doc["categories"][0]["name"] = "sparrow"
    path.write_text(json.dumps(doc) + " ")  # another size: another cache key even within one mtime tick
    assert CocoDataset(images_dir, path).class_names == ("cat", "dog", "sparrow")


# ---- the same scenes as VOC -------------------------------------------------------------------------------
IDS = (3, 5, 8, 13, 21, 34)  # non-contiguous on purpose


@pytest.fixture(scope="module")
def both(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path]:
    base = tmp_path_factory.mktemp("scenes")
    kwargs = dict(image_size=((90, 130), (70, 110)), difficult_prob=0.5)
    return (generate_voc(base / "VOC2007", 5, 3, seed=4, **kwargs),
            generate_coco(base / "coco", 5, 3, seed=4, category_ids=IDS, **kwargs))


@pytest.mark.parametrize("split", synthetic.COCO_SPLITS)
def test_same_scenes_same_contract_as_voc(both: tuple[Path, Path], split: str) -> None:
    """Item by item: the same image tensor, the same training target (bit for bit), the same evaluation
    annotation (VOC pixels, difficult = crowd) and the same class list; only the image ids are spelled differently."""
    voc_root, coco_root = both
    for keep in (False, True):
        voc = VOCDataset(voc_root, split, class_names=SYNTHETIC_CLASSES, keep_difficult=keep)
        coco = CocoDataset(coco_root / "images", coco_root / "annotations" / f"instances_{split}.json", keep_crowd=keep)
        assert coco.class_names == voc.class_names and len(coco) == len(voc) > 0
        assert [int(i) - 1 for i in coco.image_ids] == [int(i) for i in voc.image_ids]
        for i in range(len(voc)):
            a, b = voc.annotation(i), coco.annotation(i)
            assert (a.width, a.height) == (b.width, b.height)
            for field in ("boxes", "labels", "difficult"):
                np.testing.assert_array_equal(getattr(a, field), getattr(b, field))
            for x, y in zip(voc.target(i), coco.target(i)):
                assert x.dtype == y.dtype and torch.equal(x, y)
            assert coco.image_path(i).read_bytes() == voc.image_path(i).read_bytes()
            if keep:
                assert torch.equal(voc[i][0], coco[i][0])


def test_batches_through_dataloader_workers(both: tuple[Path, Path]) -> None:
    from ssd_torch.data.collate import collate_detection

    _, coco = both
    ds = CocoDataset(coco / "images", coco / "annotations" / "instances_trainval.json")
    loader = torch.utils.data.DataLoader(ds, batch_size=5, num_workers=1, collate_fn=collate_detection)
    batch = next(iter(loader))
    assert batch.images.shape == (5, 3, 300, 300)
    for i in range(5):
        boxes, labels = ds.target(i)
        n = int(batch.counts[i])
        assert torch.equal(batch.boxes[i, :n], boxes) and torch.equal(batch.labels[i, :n], labels)


def test_coco_writer_is_deterministic_and_safe(tmp_path: Path, both: tuple[Path, Path]) -> None:
    _, first = both
    again = generate_coco(tmp_path / "again", 5, 3, seed=4, category_ids=IDS, image_size=((90, 130), (70, 110)),
                          difficult_prob=0.5)
    for name in ("annotations/instances_trainval.json", "annotations/instances_test.json", "images/000007.jpg"):
        assert (again / name).read_bytes() == (first / name).read_bytes()
    doc = json.loads((first / "annotations" / "instances_trainval.json").read_text())
    assert sorted(c["id"] for c in doc["categories"]) == list(IDS)
    assert any(a["iscrowd"] for a in doc["annotations"])  # difficult objects are crowd regions
    stamp = (again / "images" / "000000.jpg").stat().st_mtime_ns
    generate_coco(again, 5, 3, seed=4, category_ids=IDS, image_size=((90, 130), (70, 110)), difficult_prob=0.5)
    assert (again / "images" / "000000.jpg").stat().st_mtime_ns == stamp  # complete: nothing rewritten
    with pytest.raises(DatasetError, match="synthetic COCO tree generated with other parameters"):
        generate_coco(again, 5, 3, seed=5, category_ids=IDS)  # another tree's folder
    foreign = tmp_path / "mine"
    foreign.mkdir()
    (foreign / "notes.txt").write_text("my file")
    with pytest.raises(DatasetError, match="not written by the synthetic generator"):
        generate_coco(foreign, 2, 1, seed=0)
    assert (foreign / "notes.txt").read_text() == "my file"
    assert sorted(p.name for p in foreign.iterdir()) == ["notes.txt"]  # nothing written next to it


def test_coco_writer_resumes_an_interrupted_run(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    root = tmp_path / "coco"

    def crash(*args: Any) -> None:
        raise KeyboardInterrupt

    with monkeypatch.context() as m:
        m.setattr(synthetic, "_coco_documents", crash)  # images written, JSON not yet
        with pytest.raises(KeyboardInterrupt):
            generate_coco(root, 2, 1, seed=3)
    assert not is_complete_coco(root, 2, 1, seed=3) and (root / "images" / "000002.jpg").is_file()
    generate_coco(root, 2, 1, seed=3)
    assert is_complete_coco(root, 2, 1, seed=3) and not is_complete_coco(root, 2, 1, seed=4)
    assert not (root / "synthetic_coco.partial.json").exists()


def test_synthetic_cli_format_coco(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    root = tmp_path / "c"
    assert synthetic_cli.main([str(root), "--trainval", "2", "--test", "1", "--seed", "1", "--format", "coco"]) == 0
    assert is_complete_coco(root, 2, 1, seed=1) and "synthetic COCO tree" in capsys.readouterr().out
    assert synthetic_cli.main([str(root), "--trainval", "3", "--test", "1", "--format", "coco"]) == 2
    assert "other parameters" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        synthetic_cli.main([str(root), "--format", "coco", "--force"])
    with pytest.raises(ValueError, match="distinct"):
        generate_coco(tmp_path / "x", 1, 1, seed=0, category_ids=[1, 1, 2, 3, 4, 5])
    with pytest.raises(TypeError, match="unknown scene parameter"):
        generate_coco(tmp_path / "y", 1, 1, seed=0, colour="red")
    assert not (tmp_path / "x").exists() and not (tmp_path / "y").exists()
    assert len(CocoDataset(root / "images", root / "annotations" / "instances_train.json")) == 1
