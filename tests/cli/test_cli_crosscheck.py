"""ssd-crosscheck: every path agrees with the reference on real batches, and a deliberately broken path fails."""
from __future__ import annotations

import copy
from pathlib import Path

import pytest
import torch

from ssd_torch.cli import crosscheck as cc
from ssd_torch.modeling.model_config import ssd300_slim
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, generate_voc
from ssd_torch.modeling.model import model_from_config

TORCH_CPU = cc.FastPath("torch-cpu", "cpu", "torch")


@pytest.fixture(scope="module")
def tree(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return generate_voc(tmp_path_factory.mktemp("xc") / "VOC2007", 2, 0, seed=3)


@pytest.fixture(scope="module")
def setup(tree: Path) -> tuple[list, torch.nn.Module, object]:
    """One augmented batch of 2 images and a seeded random slim model (with its config)."""
    batches = cc.load_batches([tree], "trainval", SYNTHETIC_CLASSES, batch_size=2, num_batches=1, seed=0)
    assert int(batches[0].counts.sum()) > 0  # real gt boxes reach the matching
    torch.manual_seed(0)
    cfg = ssd300_slim(num_classes=len(SYNTHETIC_CLASSES) + 1)
    return batches, model_from_config(cfg).eval(), cfg


@pytest.fixture(scope="module")
def computed(setup: tuple) -> tuple[cc.Results, cc.Results]:
    """Reference and torch-cpu results on the batch, random slim model outputs."""
    batches, model, cfg = setup
    outputs = cc._model_outputs(model, batches)
    ref = cc.reference_results(cfg.prior_spec, batches, outputs)
    return ref, cc.path_results(TORCH_CPU, cfg.prior_spec, batches, outputs, ref)


def test_torch_cpu_agrees_with_reference(computed: tuple[cc.Results, cc.Results]) -> None:
    ref, got = computed
    rows = cc.compare("torch-cpu", ref, got)
    assert [r.check for r in rows] == list(cc.CHECKS)
    assert all(r.ok for r in rows), cc.format_rows(rows)
    assert sum(len(scores) for _, scores, _ in ref.detections) > 0  # the detection row compared something
    assert rows[-1].agreement == 1.0


@pytest.mark.parametrize("check", cc.CHECKS)
def test_each_broken_check_fails_its_row_only(computed: tuple[cc.Results, cc.Results], check: str) -> None:
    ref, got = computed
    rows = cc.compare("torch-cpu", ref, cc.break_results(copy.deepcopy(got), {check}))
    failed = [r.check for r in rows if not r.ok]
    assert failed == [check], cc.format_rows(rows)


def test_ambiguous_priors_flag_ties_only() -> None:
    import numpy as np

    priors = np.array([[0.25, 0.5, 0.5, 1.0], [0.75, 0.5, 0.5, 1.0], [0.5, 0.5, 0.2, 0.2]])  # cxcywh
    gt = np.array([[0.25, 0.0, 0.75, 1.0]])  # overlaps priors 0 and 1 equally (IoU 1/3): a forced-match tie
    assert cc.ambiguous_priors(gt, priors).tolist() == [True, True, False]
    gt_half = np.array([[0.0, 0.0, 0.5, 0.5]])  # IoU with prior 0 exactly 0.5: at the threshold
    assert cc.ambiguous_priors(gt_half, priors[:1]).tolist() == [True]
    assert cc.ambiguous_priors(np.zeros((0, 4)), priors).tolist() == [False] * 3


@pytest.mark.slow
def test_cli_fails_loudly_on_a_broken_path(tree: Path, monkeypatch: pytest.MonkeyPatch,
                                           capsys: pytest.CaptureFixture[str]) -> None:
    monkeypatch.setenv(cc.BREAK_ENV, "torch-cpu:loss")
    args = ["--data", str(tree), "--split", "trainval", "--batches", "1", "--batch-size", "2", "--paths", "torch-cpu"]
    assert cc.main(args) == 1
    out = capsys.readouterr().out
    assert "FAIL: loss on torch-cpu" in out and "1 row(s) out of tolerance" in out
    monkeypatch.setenv(cc.BREAK_ENV, "torch-cpu:nonsense")
    assert cc.main(args) == 2
    assert "unknown check 'nonsense'" in capsys.readouterr().err


def test_cli_user_errors(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert cc.main(["--data", str(tmp_path / "none")]) == 2
    assert "none does not exist" in capsys.readouterr().err
    assert cc.main(["--paths", "torch-tpu"]) == 2
    assert "not available here" in capsys.readouterr().err


@pytest.mark.slow
def test_cli_all_available_paths_pass_on_generated_data(tmp_path: Path, monkeypatch: pytest.MonkeyPatch,
                                                        capsys: pytest.CaptureFixture[str]) -> None:
    # no --data: a synthetic tree in a temporary folder (kept under tmp_path); every path this machine has
    import tempfile

    monkeypatch.setattr(tempfile, "tempdir", str(tmp_path))
    assert cc.main(["--batches", "1", "--batch-size", "2"]) == 0, capsys.readouterr().out
    out = capsys.readouterr().out
    for path in cc.available_paths():
        assert out.count(f" {path.name} ") == len(cc.CHECKS)
    assert "all paths within tolerance" in out
    assert not list(tmp_path.iterdir())  # the generated tree is removed afterwards


@pytest.mark.slow
def test_a_crashing_path_fails_its_rows_and_the_others_still_run(setup: tuple,
                                                                 monkeypatch: pytest.MonkeyPatch) -> None:
    # simulate a path whose kernels cannot compile: path_results raises for it
    real = cc.path_results

    def flaky(path, *args):
        if path.name == "broken":
            raise AttributeError("module 'numpy' has no attribute 'row_stack'")
        return real(path, *args)

    monkeypatch.setattr(cc, "path_results", flaky)
    batches, model, cfg = setup
    rows = cc.run_crosscheck(batches, model, cfg.prior_spec, [cc.FastPath("broken", "cpu", "torch"), TORCH_CPU])
    broken = [r for r in rows if r.path == "broken"]
    assert len(broken) == len(cc.CHECKS) and not any(r.ok for r in broken)
    assert all("AttributeError" in r.note for r in broken)
    assert all(r.ok for r in rows if r.path == "torch-cpu")
