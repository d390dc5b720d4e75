"""The data fingerprint of a split (issue #19 section 4): ids + annotation content, never pixels."""
from __future__ import annotations

from pathlib import Path

from data_fixtures import GOOD, add_item, make_root, voc_xml
from ssd_torch.data.fingerprint import compare_fingerprints, fingerprint_record, split_fingerprint
from ssd_torch.data.voc import VOCDataset, _ANNOTATION_CACHE


def _tree(tmp_path: Path, n: int = 20) -> Path:
    root = make_root(tmp_path)
    for k in range(n):
        add_item(root, f"{k:03d}", [("dog", (11 + k % 5, 21, 40, 45), False)])
    return root


def test_same_data_same_fingerprint_and_pixels_do_not_count(tmp_path: Path) -> None:
    root = _tree(tmp_path)
    a = fingerprint_record(VOCDataset(root, "trainval"), "trainval")
    assert a["count"] == 20 and len(a["images"]) == 20 and compare_fingerprints(a, a) is None
    (root / "JPEGImages" / "003.jpg").write_bytes((root / "JPEGImages" / "004.jpg").read_bytes())  # pixels only
    assert fingerprint_record(VOCDataset(root, "trainval"), "trainval") == a
    assert split_fingerprint(VOCDataset(root, "trainval")) == split_fingerprint(VOCDataset(root, "trainval"))


def test_changes_are_counted_in_one_line(tmp_path: Path) -> None:
    """Hand-made change: 3 ids dropped from the split, 1 added, 2 boxes moved."""
    root = _tree(tmp_path)
    old = fingerprint_record(VOCDataset(root, "trainval"), "trainval")
    split = root / "ImageSets" / "Main" / "trainval.txt"
    split.write_text("".join(f"{k:03d}\n" for k in range(3, 20)))
    add_item(root, "new", GOOD)
    for image_id in ("010", "011"):
        (root / "Annotations" / f"{image_id}.xml").write_text(voc_xml(image_id, 64, 48, [("dog", (1, 2, 30, 40), False)]))
    _ANNOTATION_CACHE.clear()
    new = fingerprint_record(VOCDataset(root, "trainval"), "trainval")
    assert compare_fingerprints(old, new) == "split trainval: 3 images removed, 1 added, 2 annotations changed"
    assert split_fingerprint(VOCDataset(root, "trainval")) != split_fingerprint(_first_n(root))


def _first_n(root: Path):
    from ssd_torch.training.datasets import FirstN
    return FirstN(VOCDataset(root, "trainval"), 5)


def test_order_only_and_records_without_per_image_digests(tmp_path: Path) -> None:
    root = _tree(tmp_path, 4)
    old = fingerprint_record(VOCDataset(root, "trainval"), "trainval")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("003\n002\n001\n000\n")
    new = fingerprint_record(VOCDataset(root, "trainval"), "trainval")
    assert compare_fingerprints(old, new) == ("split trainval: 0 images removed, 0 added, 0 annotations changed "
                                              "(the image order changed)")
    trimmed = [{k: v for k, v in r.items() if k != "images"} for r in (old, new)]
    assert compare_fingerprints(*trimmed) == "split trainval: 4 images before, 4 now; image ids and annotations changed"


def test_class_names_not_label_numbers(tmp_path: Path) -> None:
    """The same boxes under a reordered class list are the same data."""
    root = _tree(tmp_path, 3)
    a = VOCDataset(root, "trainval", class_names=("cat", "dog"))
    b = VOCDataset(root, "trainval", class_names=("dog", "cat"))
    assert split_fingerprint(a) == split_fingerprint(b)
