"""ssd_torch.modeling.categories: a checkpoint's COCO ids, outputs without a category never predicted (masked
before ranking, the other classes' scores unchanged), and the by-id / by-name rule for COCO files."""
from __future__ import annotations

import sys
from pathlib import Path

import pytest
import torch

sys.path[:0] = [str(Path(__file__).resolve().parents[1] / d) for d in ("eval", "cli")]
from coco2017_categories import COCO2017_CATEGORIES  # noqa: E402

from ssd_torch.errors import CheckpointError  # noqa: E402
from ssd_torch.modeling.categories import (category_ids_of, coco_matching, fold_unused_classes,  # noqa: E402
                                           unused_labels)
from ssd_torch.modeling.importers import coco_category_ids, coco_class_names  # noqa: E402
from ssd_torch.modeling.model_config import ssd300_slim  # noqa: E402
from ssd_torch.modeling.predictor import Predictor  # noqa: E402


def test_the_coco2017_table_is_torchvisions_list() -> None:
    names = coco_class_names()
    ids = coco_category_ids(names)
    assert [(c, n) for c, n in zip(ids, names) if c is not None] == list(COCO2017_CATEGORIES)
    assert unused_labels(ids) == (12, 26, 29, 30, 45, 66, 68, 69, 71, 83)
    assert {names[k] for k in unused_labels(ids)} == {"N/A"}


def test_folding_keeps_every_other_probability_and_zeroes_the_masked() -> None:
    """Hand case: logits (bg 0, a ln 2, b ln 3, c ln 4): p = (1, 2, 3, 4) / 10. Masking b: (bg 0.4, a 0.2, b 0,
    c 0.4): the background takes b's mass, a and c keep theirs."""
    conf = torch.log(torch.tensor([[[1.0, 2.0, 3.0, 4.0]]]))
    p = torch.softmax(fold_unused_classes(conf, (2,)), dim=-1)
    torch.testing.assert_close(p, torch.tensor([[[0.4, 0.2, 0.0, 0.4]]]), rtol=0, atol=1e-7)
    assert fold_unused_classes(conf, ()) is conf  # no mask: the logits untouched


def _predictor(category_ids: tuple | None) -> Predictor:
    cfg = ssd300_slim(num_classes=4)
    with torch.device("meta"):
        model = torch.nn.Identity()
    return Predictor(model, cfg, ["background", "a", "N/A", "c"], category_ids=category_ids)


def test_unused_outputs_are_never_predicted_and_take_no_slot() -> None:
    """Output 2 has no id and the best score at every prior: never emitted, and the per-image cap (2 here) is
    filled by the other classes with their unmasked scores."""
    torch.manual_seed(0)
    p = 8732
    conf = torch.randn(1, p, 4)
    conf[..., 2] += 4.0
    loc = torch.zeros(1, p, 4)
    masked = _predictor((None, 1, None, 3)).decode(loc, conf, max_detections=2)[0]
    plain = _predictor(None).decode(loc, conf, max_detections=2)[0]
    assert set(plain.labels.tolist()) == {2} and len(masked.labels) == 2 and 2 not in masked.labels.tolist()
    everything = _predictor(None).decode(loc, conf, max_detections=8732 * 3)[0]
    best_other = everything.scores[everything.labels != 2][:2]
    torch.testing.assert_close(masked.scores, best_other, rtol=1e-6, atol=0)
    assert _predictor((None, 1, None, 3)).settings()["unused_labels"] == [2]
    assert "unused_labels" not in _predictor(None).settings()  # cache keys of other checkpoints unchanged


@pytest.mark.parametrize("ids, problem", [([None, 1, 2], "a list of 4 entries"), ([0, 1, 2, 3], "entry 0"),
                                          ([None, 1, True, 3], "ints >= 1 or null"), ([None, 1, 1, 3], "twice")])
def test_malformed_category_ids_are_named(ids: list, problem: str) -> None:
    with pytest.raises(CheckpointError, match=rf"checkpoint x.pt: invalid category_ids \(.*{problem}"):
        category_ids_of({"category_ids": ids}, "x.pt", 4)
    assert category_ids_of({}, "x.pt", 4) is None
    assert category_ids_of({"category_ids": [None, 5, None, 7]}, "x.pt", 4) == (None, 5, None, 7)


def test_coco_matching_by_id_else_by_unique_names() -> None:
    assert coco_matching(["background", "a", "N/A", "N/A"], [None, 4, None, None], "ckpt") == (
        ("a", "N/A", "N/A"), (4, None, None))
    assert coco_matching(["background", "a", "b"], None, "ckpt") == (("a", "b"), None)
    with pytest.raises(CheckpointError, match=r"ckpt: class names repeat \(\['N/A'\]\) and the checkpoint carries "
                                              r"no category_ids.*ssd-import"):
        coco_matching(["background", "a", "N/A", "N/A"], None, "ckpt")


def test_load_predictor_reads_category_ids(tmp_path: Path) -> None:
    from cli_fixtures import tiny_checkpoint_dict
    from ssd_torch.checkpoint import atomic_save
    from ssd_torch.modeling.predictor import load_predictor

    ckpt = tiny_checkpoint_dict(["background", "a", "N/A", "c"], 0)
    ckpt["category_ids"] = [None, 1, None, 3]
    atomic_save(ckpt, tmp_path / "ids.pt")
    predictor = load_predictor(tmp_path / "ids.pt")
    assert predictor.category_ids == (None, 1, None, 3) and predictor.unused_labels == (2,)
    ckpt["category_ids"] = [None, 1]
    atomic_save(ckpt, tmp_path / "bad.pt")
    with pytest.raises(CheckpointError, match="bad.pt: invalid category_ids"):
        load_predictor(tmp_path / "bad.pt")
