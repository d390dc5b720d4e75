"""evaluate.py (pixel conversion, scoring through the VOC evaluator) and visualize.py (drawing, curves)."""
from __future__ import annotations

import csv

import numpy as np
import pytest
from PIL import Image

from ssd_torch.data.voc import Annotation, pixel_to_normalized
from ssd_torch.evaluation.evaluate import evaluate_detections, format_ap_table, normalized_to_voc_pixels
from ssd_torch.evaluation.visualize import draw_detections, plot_training_curves


class _FakeSet:
    class_names = ("a", "b")

    def __init__(self):
        self.anns = [Annotation("x", 100, 50, np.array([[1.0, 1.0, 50.0, 25.0], [60.0, 10.0, 90.0, 40.0]]),
                          np.array([1, 2]), np.array([False, False])),
                     Annotation("y", 80, 80, np.array([[11.0, 11.0, 30.0, 30.0]]), np.array([2]), np.array([True]))]

    def __len__(self):
        return len(self.anns)

    def annotation(self, i):
        return self.anns[i]


def test_pixel_conversion_inverts_the_data_contract():
    px = np.array([[1.0, 1.0, 100.0, 50.0], [23.0, 7.0, 41.0, 19.0]])
    norm = pixel_to_normalized(px, 100, 50)
    assert np.allclose(normalized_to_voc_pixels(norm, 100, 50), px)
    assert np.allclose(normalized_to_voc_pixels(np.array([[0.0, 0.0, 1.0, 1.0]]), 100, 50), [[1, 1, 100, 50]])


def test_perfect_and_wrong_detections():
    ds = _FakeSet()
    perfect = {"x": (ds.anns[0].boxes, np.array([0.9, 0.8]), np.array([1, 2]))}
    r = evaluate_detections(ds, perfect)
    assert r.mAP == pytest.approx(1.0) and r.npos == {1: 1, 2: 1}
    swapped = {"x": (ds.anns[0].boxes, np.array([0.9, 0.8]), np.array([2, 1]))}
    assert evaluate_detections(ds, swapped).mAP == pytest.approx(0.0)
    with pytest.raises(ValueError, match="not in the dataset"):
        evaluate_detections(ds, {"z": perfect["x"]})
    table = format_ap_table(r, ["background", "a", "b"])
    assert "a" in table and "1.0000" in table and "mAP" in table


def test_draw_detections_threshold_and_degenerate_boxes():
    img = Image.new("RGB", (60, 40), (255, 255, 255))
    boxes = np.array([[5.0, 5.0, 30.0, 30.0], [40.0, 10.0, 39.0, 9.0], [1.0, 1.0, 50.0, 35.0]])
    out = draw_detections(img, boxes, np.array([0.9, 0.5, 0.1]), np.array([1, 2, 1]), ["bg", "a", "b"],
                          score_threshold=0.3)
    arr = np.asarray(out)
    assert out.size == img.size and np.asarray(img).min() == 255  # input untouched
    assert (arr[29, 15] != 255).any()      # bottom edge of the first box drawn
    assert (arr[34, 25] == 255).all()      # the 0.1 box (bottom edge y=35) is below the threshold
    with pytest.raises(ValueError, match="3 boxes, 2 scores"):
        draw_detections(img, boxes, np.array([0.9, 0.5]), np.array([1, 2, 1]), ["bg", "a", "b"])


def test_curves_png(tmp_path):
    assert plot_training_curves(tmp_path) is None
    with (tmp_path / "metrics.csv").open("w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["step", "loss", "loc_loss", "conf_loss", "lr"])
        for s in range(1, 6):
            w.writerow([s, 5 - s * 0.5, 1, 4 - s * 0.5, 0.01 * s])
    (tmp_path / "eval.csv").write_text("step,epoch,mAP,seconds\n5,0,0.5,1.0\n")
    path = plot_training_curves(tmp_path)
    assert path.is_file() and Image.open(path).size[0] > 100
