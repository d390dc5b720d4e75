"""Issue #10.8: an ssd-train user error is one line on stderr and exit 2 (``ssd_torch.cli.run_cli``)."""
from __future__ import annotations

import pytest
import torch

from ssd_torch.cli import train
from ssd_torch.data.synthetic import generate_voc
from train_fixtures import one_line, tiny_run_args


def _error(capsys, argv) -> str:
    assert train.main(argv) == 2
    return one_line(capsys.readouterr().err)


def test_missing_split_file(tmp_path, capsys):
    line = _error(capsys, tiny_run_args(tmp_path / "syn", tmp_path / "run", "--set", "data.train_split=\"trainvl\""))
    assert "trainvl.txt" in line and "missing" in line


def test_corrupt_jpeg_read_in_a_loader_worker(tmp_path, capsys):
    """Defect: a JPEG that passes the cheap scan but fails to decode inside a DataLoader worker came back as the
    worker's multi-line re-raise. Now: one line naming the file, and the data.skip_bad hint."""
    data = generate_voc(tmp_path / "syn", 8, 4, seed=0)
    jpeg = data / "JPEGImages" / "000001.jpg"
    raw = jpeg.read_bytes()
    sos = raw.find(b"\xff\xda")  # zero the scan header: start/end markers intact, the decoder fails
    jpeg.write_bytes(raw[:sos + 2] + bytes(20) + raw[sos + 22:])
    line = _error(capsys, tiny_run_args(data, tmp_path / "run", "--workers", "1", steps=2))
    assert "000001.jpg" in line and "data.skip_bad" in line and "DataLoader" not in line


@pytest.mark.parametrize("flags, words", [
    (["--set", "optim.momentum=2"], ["optim.momentum", "[0, 1)"]),
    (["--batch-size", "16"], ["8 images", "effective batch of 16"]),
    (["--device", "cuda:0"] if not torch.cuda.is_available() else ["--device", "cuda:99"], ["cuda", "--device cpu"]),
])
def test_bad_values(tmp_path, capsys, flags, words):
    line = _error(capsys, tiny_run_args(tmp_path / "syn", tmp_path / "run", *flags))
    assert all(w in line for w in words), line


def test_vgg16_refuses_to_train_without_backbone_weights(tmp_path, capsys):
    line = _error(capsys, ["--preset", "voc07", "--data-root", str(tmp_path / "VOC2007"), "--output-dir",
                           str(tmp_path / "run")])
    for word in ("model.backbone_weights", "torchvision:IMAGENET1K_FEATURES", "vgg16_reducedfc.pth", "none"):
        assert word in line, line
    assert not (tmp_path / "run").exists()


def test_a_data_root_is_the_users_data_never_a_folder_to_fill(tmp_path, capsys):
    """Reproduces: ``--preset demo --data-root MISTYPED`` filled the mistyped path with generated shapes and
    trained on them, and a real VOC folder given to the demo preset was refused as "not synthetic output"."""
    base = ["--preset", "demo", "--output-dir", str(tmp_path / "run"), "--max-steps", "1", "--no-progress",
            "--batch-size", "4", "--workers", "0", "--set", "run.tensorboard=false"]
    line = _error(capsys, [*base, "--data-root", str(tmp_path / "VOC2O07")])
    assert str(tmp_path / "VOC2O07") in line and "does not exist" in line
    assert not (tmp_path / "VOC2O07").exists() and not (tmp_path / "run").exists()
    # a real VOC year folder (here one the generator wrote earlier, read as any VOC folder) is trained on
    voc = generate_voc(tmp_path / "VOC2007", 8, 4, seed=0)
    assert train.main([*base, "--data-root", str(voc)]) == 0
    assert '"dataset": "voc"' in (tmp_path / "run" / "config.json").read_text()
