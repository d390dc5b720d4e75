"""ssd-import end to end: a peer file becomes a checkpoint that the inference loader, ssd-detect and ssd-eval read
unchanged; every refusal is one line on stderr with exit code 2, and an existing --out is never touched."""
from __future__ import annotations

import hashlib
import inspect
import json
from pathlib import Path

import numpy as np
import pytest
import torch
from PIL import Image

from reference.priors import SSD_PYTORCH_VOC
from ssd_torch.cli import detect, eval as eval_cli
from ssd_torch.cli import import_checkpoint as cli
from ssd_torch.data.preprocess import CAFFE_RGB
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_voc
from ssd_torch.modeling.predictor import load_predictor
from ssd_torch.modeling.importers import FORMATS, export_state_dict, peer_key_map
from ssd_torch.modeling.model import model_from_config
from ssd_torch.modeling.model_config import ssd300_vgg16
from ssd_torch.nms import postprocess

#: ssd.pytorch's own post-processing (no clipping, no per-image cap) runs once ssd_torch.nms.postprocess takes
#: clip_boxes (branch h-nms); until then an imported ssd.pytorch checkpoint cannot detect.
NMS_TAKES_PEER_SETTINGS = "clip_boxes" in inspect.signature(postprocess).parameters


@pytest.fixture(scope="module")
def peer_file(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, dict[str, torch.Tensor]]:
    """An ssd.pytorch-layout file of a random SSD300-VGG16 for the 6 synthetic classes (7 with background)."""
    torch.manual_seed(0)
    sd = export_state_dict("ssd.pytorch", model_from_config(ssd300_vgg16(num_classes=7)).state_dict())
    path = tmp_path_factory.mktemp("peer") / "ssd300_synthetic.pth"
    torch.save(sd, path)
    return path, sd


def _run(argv: list[str], capsys: pytest.CaptureFixture) -> tuple[int, str, str]:
    code = cli.main(argv)
    out, err = capsys.readouterr()
    return code, out, err


@pytest.mark.slow  # a full VGG16 SSD300 written, read, and run by ssd-detect and ssd-eval (~10 s)
@pytest.mark.skipif(not NMS_TAKES_PEER_SETTINGS, reason="needs ssd_torch.nms.postprocess(clip_boxes=...) (h-nms)")
def test_imported_checkpoint_works_with_the_tools(peer_file, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    path, sd = peer_file
    out = tmp_path / "imported.pt"
    code, stdout, err = _run(["ssd.pytorch", str(path), "--out", str(out), "--classes", ",".join(SYNTHETIC_CLASSES)],
                             capsys)
    assert code == 0, err
    assert f"wrote {out}" in stdout and "imported ssd.pytorch SSD300" in stdout and "circle" in stdout
    assert "published: none claimed" in stdout and "mAP 77.43" not in stdout  # the file name may be quoted
    _p = load_predictor(out, "cpu")
    model, cfg, names = _p.model, _p.config, list(_p.categories)
    assert names == ["background", *SYNTHETIC_CLASSES]
    assert cfg.prior_spec == SSD_PYTORCH_VOC and cfg.preprocess == CAFFE_RGB
    for ours, theirs in peer_key_map(FORMATS["ssd.pytorch"]).items():
        assert torch.equal(model.state_dict()[ours], sd[theirs]), ours
    tree = generate_voc(tmp_path / "VOC2007", 1, 2, seed=1, image_size=(120, 90))
    assert eval_cli.main([str(out), "--data", str(tree), "--split", "test", "--device", "cpu", "--out",
                          str(tmp_path / "eval"), "--no-progress"]) == 0
    results = json.loads((tmp_path / "eval" / "results_voc07.json").read_text())
    assert results["num_images"] == 2 and set(results["ap"]) == set(SYNTHETIC_CLASSES)
    Image.fromarray(np.full((64, 80, 3), 90, np.uint8)).save(tmp_path / "grey.png")
    assert detect.main([str(out), str(tmp_path / "grey.png"), "--out", str(tmp_path / "det"), "--device", "cpu",
                        "--score-threshold", "0.0"]) == 0
    capsys.readouterr()


def test_existing_out_is_refused_and_untouched(peer_file, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    out = tmp_path / "mine.pt"
    out.write_bytes(b"a user's file")
    code, _, err = _run(["ssd.pytorch", str(peer_file[0]), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1
    assert err.startswith("ssd-import: error: --out") and "already exists" in err and str(out) in err
    assert out.read_bytes() == b"a user's file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["mine.pt"]  # no temporary file left behind


def test_save_new_does_not_replace_a_file_that_appears_meanwhile(tmp_path: Path,
                                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """The check before reading and the hard link at the end: a file created between the two stays intact."""
    out = tmp_path / "race.pt"
    import ssd_torch.checkpoint as checkpoint

    real_save = checkpoint.atomic_save

    def save_then_someone_writes(obj, path):
        result = real_save(obj, path)
        out.write_bytes(b"theirs")
        return result

    monkeypatch.setattr(checkpoint, "atomic_save", save_then_someone_writes)
    with pytest.raises(cli.UserError, match="already exists"):
        cli._save_new({"x": torch.zeros(1)}, out)
    assert out.read_bytes() == b"theirs" and sorted(p.name for p in tmp_path.iterdir()) == ["race.pt"]


def _small(shapes: dict[str, tuple[int, ...]]) -> dict[str, torch.Tensor]:
    return {k: torch.zeros(s) for k, s in shapes.items()}


@pytest.mark.parametrize("case", ["wrong layout", "wrong class count", "wrong shapes", "not weights"])
def test_bad_files_get_one_line(case: str, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    """Cheap files that fail at each check in turn (layout, class count, shapes), and a file that is no weights."""
    keys = peer_key_map(FORMATS["ssd.pytorch"]).values()
    tiny = {k: (1, 1, 1, 1) for k in keys}
    path = tmp_path / "peer.pth"
    if case == "wrong layout":
        torch.save(_small({f"backbone.{k}": s for k, s in tiny.items()}), path)
        want = ["not a ssd.pytorch SSD300 state dict", "missing keys: ['L2Norm.weight'"]
    elif case == "wrong class count":
        torch.save(_small({**tiny, "conf.0.weight": (4 * 81, 512, 3, 3)}), path)
        want = ["the file has 81 classes", "published model has 21", "--classes"]
    elif case == "wrong shapes":
        torch.save(_small({**tiny, "conf.0.weight": (4 * 21, 512, 3, 3)}), path)
        want = ["with 21 classes; wrong shapes: ['L2Norm.weight: [1, 1, 1, 1] (expected [512])'", "more)"]
    else:
        path.write_text("not a pickle")
        want = ["not a PyTorch checkpoint"]
    out = tmp_path / "out.pt"
    code, _, err = _run(["ssd.pytorch", str(path), "--out", str(out)], capsys)
    assert code == 2 and err.count("\n") == 1 and err.startswith("ssd-import: error: ")
    assert str(path) in err and all(w in err for w in want), err
    assert not out.exists()


def test_bad_classes_flag(peer_file, tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    code, _, err = _run(["ssd.pytorch", str(peer_file[0]), "--out", str(tmp_path / "o.pt"), "--classes",
                         "background,a"], capsys)
    assert code == 2 and "without 'background'" in err
    digest = hashlib.sha256(peer_file[0].read_bytes()).hexdigest()
    code, _, err = _run(["ssd.pytorch", str(peer_file[0]), "--out", str(tmp_path / "o.pt")], capsys)
    assert code == 2 and "the file has 7 classes" in err and "pass the 6 object class names" in err
    assert hashlib.sha256(peer_file[0].read_bytes()).hexdigest() == digest  # the peer file is only read
