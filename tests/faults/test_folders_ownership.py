"""A tool replaces only the files it wrote, recognised by its journal, never by a name alone (issue #18 s4):
the run folder's manifest ``written.jsonl`` and ssd-detect's ``detections.jsonl`` are one primitive,
``ssd_torch.files.Journal``; the run folder's file names are one list, ``ssd_torch.run_files``.

Reproduced defects: ``ssd-train --overwrite`` deleted a user's own ``config.json`` in the run folder because of
its name; ``ssd-detect --overwrite`` replaced a ``detections.jsonl`` it had not written; ``ssd-detect
--recursive`` read the drawings of an earlier ``--out`` inside the input folder as inputs.
"""
from __future__ import annotations

import inspect
import json
from pathlib import Path

import numpy as np
import pytest

from cli_fixtures import write_tiny_checkpoint
from ssd_torch.cli import detect, report, train
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, render_image
from ssd_torch.evaluation import visualize
from ssd_torch.files import Journal
from ssd_torch.run_files import RUN_FILES
from train_fixtures import one_line, tiny_run_args

NAMES = ["background", *SYNTHETIC_CLASSES]


def test_journal_claims(tmp_path: Path) -> None:
    journal = Journal(tmp_path / "j.jsonl", "tool/1")
    assert journal.header() is None and not journal.claims().owns("a.png")
    journal.start({"settings": 1}, files=["a.png"], patterns=["sub/*.png"])
    journal.claim(["b[1].png"])  # a literal name, not a pattern
    with journal.path.open("a") as f:
        f.write('{"type": "writing", "files": ["torn')  # an interrupted append
    journal.append([{"type": "writing", "drawings": ["c.png"]}])  # the key of ssd-detect's first journals
    claims = journal.claims()
    assert [claims.owns(n) for n in ("a.png", "b[1].png", "b1.png", "c.png", "sub/x.png", "torn", "d.png")] == \
        [True, True, False, True, True, False, False]
    assert claims.owns(".a.png.k2j4h1.tmp") and claims.owns("sub/.x.png.123.link") and not claims.owns(".d.png.1.tmp")
    assert journal.header() == {"type": "run", "format": "tool/1", "settings": 1}
    assert Journal(journal.path, "other/1").header() is None  # another tool's journal claims nothing for this one
    (tmp_path / "user.jsonl").write_text('{"type": "writing", "files": ["a.png"]}\n')
    assert not Journal(tmp_path / "user.jsonl", "tool/1").claims().owns("a.png")  # no header: a user's file


def test_overwrite_keeps_a_users_config_json(tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    data, run = tmp_path / "syn", tmp_path / "run"
    run.mkdir()
    (run / "config.json").write_text('{"my": "own settings"}\n')
    assert train.main(tiny_run_args(data, run, "--overwrite")) == 2
    line = one_line(capsys.readouterr().err)
    assert "config.json" in line and "did not write" in line and "--output-dir" in line
    assert (run / "config.json").read_text() == '{"my": "own settings"}\n'
    assert sorted(p.name for p in run.iterdir()) == ["config.json"] and not data.exists()


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", NAMES, seed=0)


def _picture(path: Path, seed: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    render_image(96, 64, np.random.default_rng(seed))[0].save(path)


def test_detect_never_replaces_a_journal_it_did_not_write(checkpoint: Path, tmp_path: Path,
                                                          capsys: pytest.CaptureFixture[str]) -> None:
    _picture(tmp_path / "x.png", 1)
    out = tmp_path / "out"
    out.mkdir()
    (out / "detections.jsonl").write_text("the user's own log\n")
    assert detect.main([str(checkpoint), str(tmp_path / "x.png"), "--out", str(out), "--device", "cpu",
                        "--overwrite"]) == 2
    assert "detections.jsonl" in one_line(capsys.readouterr().err)
    assert sorted(p.name for p in out.iterdir()) == ["detections.jsonl"]
    assert (out / "detections.jsonl").read_text() == "the user's own log\n"


def test_recursive_skips_the_results_of_an_earlier_run(checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "photos"
    _picture(src / "a.png", 2)
    _picture(src / "trip" / "b.png", 3)
    # what an earlier `ssd-detect photos --recursive --out photos/results` left: its journal and drawings
    detect.journal(src / "results").start({"settings": {}}, files=["a.png.png", "trip/b.png.png"])
    _picture(src / "results" / "a.png.png", 2)
    _picture(src / "results" / "trip" / "b.png.png", 3)
    (src / "notes").mkdir()
    (src / "notes" / "detections.jsonl").write_text("a user's file of that name: not our journal\n")
    _picture(src / "notes" / "c.png", 4)
    assert detect.main([str(checkpoint), str(src), "--recursive", "--out", str(tmp_path / "again"),
                        "--device", "cpu"]) == 0
    doc = json.loads((tmp_path / "again" / "detections.json").read_text())
    assert [rec["relative"] for rec in doc["images"]] == ["a.png", "notes/c.png", "trip/b.png"]


def test_one_list_of_run_folder_names() -> None:
    """ssd-report and the curves name the run folder's files through ``ssd_torch.run_files`` only."""
    for module in (report, visualize):
        code = inspect.getsource(module)
        assert not [n for n in RUN_FILES if f'"{n}"' in code or f"'{n}'" in code], module.__name__
