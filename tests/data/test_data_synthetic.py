"""Synthetic VOC generator: determinism, VOC layout, scale-range coverage, completeness check, CLI."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from ssd_torch.cli import synthetic as synthetic_cli
from ssd_torch.data import synthetic
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, ensure_voc, generate_voc, is_complete
from ssd_torch.data.voc import VOCDataset, parse_annotation, pixel_to_normalized
from ssd_torch.errors import DatasetError


def _tree_contents(root: Path) -> tuple[dict[str, bytes], dict[str, np.ndarray]]:
    xml = {p.name: p.read_bytes() for p in sorted((root / "Annotations").iterdir())}
    pixels = {p.name: np.asarray(Image.open(p)) for p in sorted((root / "JPEGImages").iterdir())}
    return xml, pixels


def test_same_seed_same_bytes_and_pixels(tmp_path: Path) -> None:
    a = generate_voc(tmp_path / "a" / "VOC2007", 5, 2, seed=7)
    b = generate_voc(tmp_path / "b" / "VOC2007", 5, 2, seed=7)
    c = generate_voc(tmp_path / "c" / "VOC2007", 5, 2, seed=8)
    xa, pa = _tree_contents(a)
    xb, pb = _tree_contents(b)
    xc, pc = _tree_contents(c)
    assert xa == xb and pa.keys() == pb.keys() and len(xa) == 7
    assert all(np.array_equal(pa[k], pb[k]) for k in pa)
    assert xa != xc and not all(np.array_equal(pa[k], pc[k]) for k in pa)
    for split in ("trainval", "train", "val", "test"):
        assert (a / "ImageSets/Main" / f"{split}.txt").read_bytes() == (b / "ImageSets/Main" / f"{split}.txt").read_bytes()


def test_voc_layout_and_splits(tmp_path: Path) -> None:
    root = generate_voc(tmp_path / "VOC2007", 5, 3, seed=0)
    main = root / "ImageSets" / "Main"
    assert (main / "trainval.txt").read_text().split() == [f"{i:06d}" for i in range(5)]
    assert (main / "test.txt").read_text().split() == ["000005", "000006", "000007"]
    assert (main / "train.txt").read_text().split() + (main / "val.txt").read_text().split() \
        == ["000000", "000002", "000004", "000001", "000003"]
    ann = parse_annotation(root / "Annotations" / "000000.xml", SYNTHETIC_CLASSES)  # valid VOC XML
    with Image.open(root / "JPEGImages" / "000000.jpg") as img:
        assert img.format == "JPEG" and img.size == (ann.width, ann.height) == (300, 300)


def test_objects_cover_the_prior_scale_range(tmp_path: Path) -> None:
    """Sides from below the smallest prior (0.1) to near full-image; every class; 1..6 objects; some difficult."""
    root = generate_voc(tmp_path / "VOC2007", 80, 0, seed=3, difficult_prob=0.2)
    ds = VOCDataset(root, "trainval", class_names=SYNTHETIC_CLASSES)
    sides, labels, n_difficult = [], [], 0
    for i in range(len(ds)):
        ann = ds.annotation(i)
        norm = pixel_to_normalized(ann.boxes, ann.width, ann.height)
        side = np.sqrt((norm[:, 2] - norm[:, 0]) * (norm[:, 3] - norm[:, 1]))
        assert 1 <= int((~ann.difficult).sum()) <= 6
        sides += side[~ann.difficult].tolist()
        labels += ann.labels.tolist()
        n_difficult += int(ann.difficult.sum())
        assert np.all(side[ann.difficult] < 0.06)  # difficult = tiny
    assert min(sides) < 0.1 and max(sides) > 0.75
    assert np.quantile(sides, 0.25) < 0.2 < np.quantile(sides, 0.75)  # spread, not only extremes
    assert set(labels) == set(range(1, len(SYNTHETIC_CLASSES) + 1))
    assert n_difficult >= 5


@pytest.mark.parametrize("name", SYNTHETIC_CLASSES)
def test_shape_masks_touch_their_box(name: str) -> None:
    """The written box is the mask's tight box; each shape fills its box to within a pixel on every side."""
    rng = np.random.default_rng(0)
    for w, h in [(21, 21), (40, 70), (200, 150)]:
        mask = synthetic._shape_mask(name, w, h, rng)
        x0, y0, x1, y1 = mask.getbbox()
        assert x0 <= 1 and y0 <= 1 and x1 >= w - 1 and y1 >= h - 1


def test_unknown_shape_rejected() -> None:
    with pytest.raises(ValueError, match="unknown synthetic shape 'hexagon'"):
        synthetic._shape_mask("hexagon", 10, 10, np.random.default_rng(0))


def test_box_is_tight_on_drawn_pixels() -> None:
    """On a flat background, the object's pixels span exactly its VOC box (1-based inclusive)."""
    rng = np.random.default_rng(0)
    canvas = Image.new("RGB", (120, 100), (0, 0, 0))
    box = synthetic._draw_object(canvas, "star", (30, 20, 50, 40), rng)
    ys, xs = np.nonzero(np.asarray(canvas).max(axis=2) > 0)
    assert box == (xs.min() + 1, ys.min() + 1, xs.max() + 1, ys.max() + 1)


def test_image_size_range(tmp_path: Path) -> None:
    root = generate_voc(tmp_path / "VOC2007", 8, 0, seed=1, image_size=((200, 260), (150, 180)))
    sizes = {parse_annotation(p, SYNTHETIC_CLASSES)[1:3] for p in (root / "Annotations").iterdir()}
    assert all(200 <= w <= 260 and 150 <= h <= 180 for w, h in sizes) and len(sizes) > 1
    with pytest.raises(ValueError, match="image_size"):
        generate_voc(tmp_path / "x", 1, 0, seed=1, image_size=(10, 300))


def test_is_complete_and_ensure(tmp_path: Path) -> None:
    root = tmp_path / "VOC2007"
    assert not is_complete(root, 3, 2, seed=4)
    generate_voc(root, 3, 2, seed=4)
    assert is_complete(root, 3, 2, seed=4)
    assert not is_complete(root, 3, 2, seed=5) and not is_complete(root, 4, 2, seed=4)
    assert json.loads((root / "synthetic.json").read_text())["seed"] == 4
    stamp = (root / "JPEGImages" / "000000.jpg").stat().st_mtime_ns
    ensure_voc(root, 3, 2, seed=4)  # complete: nothing rewritten
    assert (root / "JPEGImages" / "000000.jpg").stat().st_mtime_ns == stamp
    (root / "JPEGImages" / "000004.jpg").unlink()
    assert not is_complete(root, 3, 2, seed=4)
    ensure_voc(root, 3, 2, seed=4)
    assert is_complete(root, 3, 2, seed=4)


def test_invalid_counts() -> None:
    with pytest.raises(ValueError, match="positive number of images"):
        generate_voc("/nonexistent-never-written", 0, 0, seed=0)


@pytest.mark.parametrize("args", [["--trainval", "0", "--test", "0"], ["--size", "0", "0"], ["--size", "64", "31"]])
def test_cli_bad_arguments_are_one_line_before_anything_is_written(tmp_path: Path, capsys, args) -> None:
    """Defects: ``--trainval 0 --test 0`` was a traceback; ``--size 0 0`` a traceback after a partial tree."""
    assert synthetic_cli.main([str(tmp_path / "d"), *args]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "nothing was written" in err and "Traceback" not in err
    assert not (tmp_path / "d").exists()


def test_data_module_has_no_command_line() -> None:
    """The command line lives in ssd_torch.cli.synthetic: the data layer does not import the cli layer."""
    import subprocess
    import sys
    code = ("import sys, ssd_torch.data.synthetic as s; assert not hasattr(s, 'main'); "
            "assert 'ssd_torch.cli' not in sys.modules")
    subprocess.run([sys.executable, "-c", code], check=True)


def test_cli(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "VOC2007"
    assert synthetic_cli.main([str(root), "--trainval", "3", "--test", "1", "--seed", "2"]) == 0
    assert is_complete(root, 3, 1, seed=2) and "trainval 3" in capsys.readouterr().out


@pytest.mark.slow
def test_parallel_generation_is_identical(tmp_path: Path) -> None:
    a = generate_voc(tmp_path / "a" / "VOC2007", 6, 2, seed=9)
    b = generate_voc(tmp_path / "b" / "VOC2007", 6, 2, seed=9, workers=2)
    xa, pa = _tree_contents(a)
    xb, pb = _tree_contents(b)
    assert xa == xb and all(np.array_equal(pa[k], pb[k]) for k in pa)


# ---- issue #10: generation never touches files it did not write -------------------------------------------
def _snapshot(root: Path) -> dict[str, bytes]:
    return {str(p.relative_to(root)): p.read_bytes() for p in sorted(root.rglob("*")) if p.is_file()}


def _users_voc_tree(root: Path) -> dict[str, bytes]:
    """A user's own VOC year folder (ids that the generator would also write)."""
    for sub in ("Annotations", "JPEGImages", "ImageSets/Main"):
        (root / sub).mkdir(parents=True)
    (root / "JPEGImages" / "000005.jpg").write_bytes(b"\xff\xd8 the user's photo \xff\xd9")
    (root / "Annotations" / "000005.xml").write_text("<annotation><filename>000005.jpg</filename></annotation>")
    (root / "ImageSets" / "Main" / "trainval.txt").write_text("000005\n")
    return _snapshot(root)


def test_generation_refuses_a_users_tree(tmp_path: Path) -> None:
    root = tmp_path / "realvoc"
    before = _users_voc_tree(root)
    for write in (generate_voc, ensure_voc):
        with pytest.raises(DatasetError, match=r"realvoc.*(not written by the synthetic generator)"):
            write(root, 3, 1, seed=0)
    assert _snapshot(root) == before


def test_generation_refuses_a_tree_of_other_parameters(tmp_path: Path) -> None:
    root = generate_voc(tmp_path / "syn", 3, 1, seed=0)
    before = _snapshot(root)
    with pytest.raises(DatasetError, match=r"other parameters.*3 trainval \+ 1 test.*5 trainval \+ 2 test"):
        ensure_voc(root, 5, 2, seed=0)
    with pytest.raises(DatasetError, match="other parameters"):
        generate_voc(root, 3, 1, seed=1)
    assert _snapshot(root) == before


def test_interrupted_generation_is_completed_with_the_same_bytes(tmp_path: Path, monkeypatch) -> None:
    real = synthetic._write_one

    def crash_at_three(root, index, params):
        if index == 3:
            raise KeyboardInterrupt
        real(root, index, params)

    monkeypatch.setattr(synthetic, "_write_one", crash_at_three)
    with pytest.raises(KeyboardInterrupt):
        generate_voc(tmp_path / "a" / "VOC", 4, 2, seed=5)
    monkeypatch.setattr(synthetic, "_write_one", real)
    assert not is_complete(tmp_path / "a" / "VOC", 4, 2, seed=5)
    ensure_voc(tmp_path / "a" / "VOC", 4, 2, seed=5)  # our own unfinished tree: completed, not refused
    assert is_complete(tmp_path / "a" / "VOC", 4, 2, seed=5)
    assert _snapshot(tmp_path / "a" / "VOC") == _snapshot(generate_voc(tmp_path / "b" / "VOC", 4, 2, seed=5))


def test_empty_folder_is_used(tmp_path: Path) -> None:
    (tmp_path / "empty").mkdir()
    assert is_complete(ensure_voc(tmp_path / "empty", 2, 1, seed=0), 2, 1, seed=0)


def test_cli_refusal_is_one_line(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    root = tmp_path / "realvoc"
    before = _users_voc_tree(root)
    assert synthetic_cli.main([str(root), "--trainval", "3", "--test", "1", "--force"]) == 2
    err = capsys.readouterr().err.strip()
    assert len(err.splitlines()) == 1 and "realvoc" in err and "Traceback" not in err
    assert _snapshot(root) == before


@pytest.mark.parametrize("fmt", ["voc", "coco"])
@pytest.mark.parametrize("content", [b"{not json", b"[1, 2]", b"\xff\xfe"])
def test_one_stamp_protocol_an_unreadable_stamp_is_refused_in_both_formats(tmp_path: Path, fmt: str,
                                                                           content: bytes) -> None:
    """Defect: the VOC and COCO trees had two stamp protocols, with opposite behaviour on an unreadable stamp
    (VOC refused; COCO wrote into the folder when its in-progress stamp matched)."""
    from ssd_torch.data.synthetic import COCO_STAMP, STAMP, generate_coco

    root = tmp_path / "tree"
    generate = generate_voc if fmt == "voc" else generate_coco
    generate(root, 2, 1, seed=0)
    stamp = root / (STAMP if fmt == "voc" else COCO_STAMP)
    params = stamp.read_text()
    (root / stamp.name.replace(".json", ".partial.json")).write_text(params)  # an interrupted run's stamp
    stamp.write_bytes(content)
    before = _snapshot(root)
    with pytest.raises(DatasetError, match="unreadable synthetic-tree stamp"):
        generate(root, 2, 1, seed=0)
    assert _snapshot(root) == before
    check = is_complete if fmt == "voc" else synthetic.is_complete_coco
    assert not check(root, 2, 1, seed=0)
