"""ssd-detect on ordinary files (issue #10, items 6 and 7): 16-bit PNGs, EXIF orientation, unique output names,
every format PIL reads, unreadable files, streamed and resumable results, filters, and a user's files.

Each test runs the real tool in-process (``detect.main``) on images written into ``tmp_path`` and reads back
what it wrote (``detections.jsonl`` while it runs, ``detections.json`` at the end).
"""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

from cli_fixtures import write_tiny_checkpoint
from ssd_torch.cli import detect
from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, render_image

NAMES = ["background", *SYNTHETIC_CLASSES]
EXIF_ORIENTATION = 0x0112


@pytest.fixture(scope="module")
def checkpoint(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return write_tiny_checkpoint(tmp_path_factory.mktemp("ckpt") / "tiny.pt", NAMES, seed=0)


def _picture(seed: int, size: tuple[int, int] = (96, 64)) -> Image.Image:
    """A synthetic scene (textured background, a few shapes): content the random network reacts to."""
    return render_image(size[0], size[1], np.random.default_rng(seed))[0]


def _run(argv: list[str], capsys: pytest.CaptureFixture[str]) -> tuple[int, str, str]:
    code = detect.main(argv)
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _detect(checkpoint: Path, source: Path, out: Path, *extra: str) -> dict:
    """Run ssd-detect (CPU, every detection listed) and return its detections.json."""
    assert detect.main([str(checkpoint), str(source), "--out", str(out), "--device", "cpu",
                        "--score-threshold", "0", *extra]) == 0
    return json.loads((out / "detections.json").read_text())


def _by_name(doc: dict) -> dict[str, dict]:
    return {Path(rec["file"]).name: rec for rec in doc["images"]}


def test_16_bit_grayscale_png_is_scaled_not_saturated(checkpoint: Path, tmp_path: Path) -> None:
    gray = np.asarray(_picture(1).convert("L"), dtype=np.uint16)
    src = tmp_path / "in"
    src.mkdir()
    Image.fromarray(gray.astype(np.uint8)).save(src / "gray8.png")
    Image.fromarray(gray * 257).save(src / "gray16.png")  # the same picture on the full 16-bit range
    assert Image.open(src / "gray16.png").mode.startswith("I")
    recs = _by_name(_detect(checkpoint, src, tmp_path / "out"))
    assert recs["gray16.png"]["detections"] == recs["gray8.png"]["detections"]
    assert len(recs["gray8.png"]["detections"]) > 0
    assert recs["gray16.png"]["source_mode"].startswith("I")


def test_exif_orientation_is_applied_and_reported(checkpoint: Path, tmp_path: Path) -> None:
    upright = _picture(2)  # 96 x 64, as a viewer shows it
    src = tmp_path / "in"
    src.mkdir()
    upright.save(src / "upright.png")
    # a phone stores the sensor's pixels and says "rotate 90 deg clockwise to view" (EXIF orientation 6)
    stored = upright.transpose(Image.Transpose.ROTATE_90)
    exif = Image.Exif()
    exif[EXIF_ORIENTATION] = 6
    stored.save(src / "phone.png", exif=exif.tobytes())
    recs = _by_name(_detect(checkpoint, src, tmp_path / "out"))
    phone, ref = recs["phone.png"], recs["upright.png"]
    assert (phone["width"], phone["height"]) == (96, 64)
    assert phone["detections"] == ref["detections"]
    assert phone["orientation"]["exif"] == 6 and "90" in phone["orientation"]["applied"]
    assert ref["orientation"]["exif"] == 1
    drawn = Image.open(tmp_path / "out" / phone["drawing"])
    assert drawn.size == (96, 64)


def test_same_stem_gives_distinct_traceable_outputs(checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _picture(3).save(src / "a.jpg")
    _picture(4).save(src / "a.png")
    doc = _detect(checkpoint, src, tmp_path / "out")
    drawings = {Path(rec["file"]).name: rec["drawing"] for rec in doc["images"]}
    assert len(set(drawings.values())) == 2
    for name, drawing in drawings.items():
        assert name in drawing and (tmp_path / "out" / drawing).is_file()


def test_folder_takes_every_format_and_recurses_on_request(checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    (src / "sub").mkdir(parents=True)
    _picture(5).save(src / "p.webp", lossless=True)
    _picture(6).save(src / "q.tif")
    _picture(7).save(src / "r.jpg")
    _picture(8).save(src / "sub" / "s.png")
    (src / "notes.txt").write_text("not an image")
    flat = _detect(checkpoint, src, tmp_path / "flat")
    assert sorted(Path(r["file"]).name for r in flat["images"]) == ["p.webp", "q.tif", "r.jpg"]
    deep = _detect(checkpoint, src, tmp_path / "deep", "--recursive")
    assert sorted(r["relative"] for r in deep["images"]) == ["p.webp", "q.tif", "r.jpg", "sub/s.png"]
    sub = next(r for r in deep["images"] if r["relative"] == "sub/s.png")
    assert (tmp_path / "deep" / sub["drawing"]).is_file() and sub["drawing"].startswith("sub/")


def test_unreadable_files_are_skipped_counted_and_listed(checkpoint: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "in"
    src.mkdir()
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    _picture(9).save(src / "good.png")
    code, out, _ = _run([str(checkpoint), str(src), "--out", str(tmp_path / "out"), "--device", "cpu"], capsys)
    assert code == 0
    doc = json.loads((tmp_path / "out" / "detections.json").read_text())
    assert [Path(r["file"]).name for r in doc["images"]] == ["good.png"]
    assert [Path(s["file"]).name for s in doc["skipped"]] == ["broken.jpg"]
    assert doc["counts"]["skipped"] == 1 and doc["counts"]["images"] == 1
    assert "1 unreadable" in out and "broken.jpg" in out


def test_a_folder_of_unreadable_files_is_a_one_line_error(checkpoint: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    src = tmp_path / "bad"
    src.mkdir()
    (src / "broken.jpg").write_bytes(b"\xff\xd8\xff truncated")
    code, _, err = _run([str(checkpoint), str(src), "--out", str(tmp_path / "o"), "--device", "cpu"], capsys)
    assert code == 2 and "broken.jpg" in err and "cannot read image" in err and len(err.splitlines()) == 1


def test_results_stream_and_an_interrupted_run_resumes(checkpoint: Path, tmp_path: Path,
                                                       monkeypatch: pytest.MonkeyPatch,
                                                       capsys: pytest.CaptureFixture[str]) -> None:
    from ssd_torch.detector import Detector

    src = tmp_path / "in"
    src.mkdir()
    for i in range(3):
        _picture(10 + i).save(src / f"{i}.png")
    out = tmp_path / "out"
    args = [str(checkpoint), str(src), "--out", str(out), "--device", "cpu", "--batch-size", "1"]
    real, seen = Detector.detect, []

    def interrupted_after_one(self, images):  # Ctrl-C while the second batch runs
        seen.extend(d.path.name for d in images)
        if len(seen) > 1:
            raise KeyboardInterrupt
        return real(self, images)

    monkeypatch.setattr(Detector, "detect", interrupted_after_one)
    assert detect.main(args) == 130
    assert "--resume" in capsys.readouterr().err
    lines = [json.loads(line) for line in (out / "detections.jsonl").read_text().splitlines()]
    assert [Path(r["file"]).name for r in lines if r["type"] == "image"] == ["0.png"]
    assert not (out / "detections.json").exists() and not list(out.rglob("*.tmp"))

    monkeypatch.setattr(Detector, "detect", lambda self, images: seen.extend(d.path.name for d in images)
                        or real(self, images))
    seen.clear()
    assert detect.main(args + ["--resume"]) == 0
    assert seen == ["1.png", "2.png"]  # the finished image is not recomputed
    doc = json.loads((out / "detections.json").read_text())
    assert [Path(r["file"]).name for r in doc["images"]] == ["0.png", "1.png", "2.png"]


def _finished_run(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str],
                  seed: int) -> tuple[Path, Path, list[str]]:
    """A folder with one picture ``x.png`` and a finished ssd-detect run on it: ``(input, out, argv)``."""
    src = tmp_path / "in"
    src.mkdir()
    _picture(seed).save(src / "x.png")
    out = tmp_path / "out"
    base = [str(checkpoint), str(src), "--out", str(out), "--device", "cpu"]
    assert _run(base, capsys)[0] == 0
    return src, out, base


def test_resume_refuses_other_settings(checkpoint: Path, tmp_path: Path,
                                       capsys: pytest.CaptureFixture[str]) -> None:
    _, _, base = _finished_run(checkpoint, tmp_path, capsys, 13)
    code, _, err = _run(base + ["--resume", "--nms-threshold", "0.3"], capsys)
    assert code == 2 and "nms_threshold" in err and len(err.splitlines()) == 1
    code, _, err = _run(base[:2] + ["--out", str(tmp_path / "empty"), "--resume"], capsys)
    assert code == 2 and "nothing to resume" in err


def test_filters_classes_nms_threshold_and_max_detections(checkpoint: Path, tmp_path: Path) -> None:
    src = tmp_path / "in"
    src.mkdir()
    _picture(14).save(src / "x.png")
    everything = _detect(checkpoint, src, tmp_path / "all", "--max-detections", "100000")["images"][0]
    assert {d["class"] for d in everything["detections"]} >= {"circle", "square"}
    few = _detect(checkpoint, src, tmp_path / "few", "--max-detections", "3")["images"][0]
    assert few["detections"] == everything["detections"][:3]
    circles = _detect(checkpoint, src, tmp_path / "circle", "--classes", "circle",
                      "--max-detections", "5")["images"][0]
    assert circles["detections"] == [d for d in everything["detections"] if d["class"] == "circle"][:5]
    loose = _detect(checkpoint, src, tmp_path / "nms", "--nms-threshold", "0.9")["images"][0]
    strict = _detect(checkpoint, src, tmp_path / "nms2", "--nms-threshold", "0.1")["images"][0]
    assert len(strict["detections"]) < len(loose["detections"])


def test_unknown_class_is_a_user_error(checkpoint: Path, tmp_path: Path, capsys: pytest.CaptureFixture[str]) -> None:
    _picture(15).save(tmp_path / "x.png")
    code, _, err = _run([str(checkpoint), str(tmp_path / "x.png"), "--out", str(tmp_path / "o"),
                         "--classes", "circle,dog"], capsys)
    assert code == 2 and "'dog'" in err and "circle" in err


def test_out_naming_an_existing_file_is_a_one_line_error(checkpoint: Path, tmp_path: Path,
                                                         capsys: pytest.CaptureFixture[str]) -> None:
    _picture(16).save(tmp_path / "x.png")
    readme = tmp_path / "README.md"
    readme.write_text("the user's notes\n")
    code, _, err = _run([str(checkpoint), str(tmp_path / "x.png"), "--out", str(readme), "--device", "cpu"], capsys)
    assert code == 2 and "README.md" in err and "Traceback" not in err and len(err.splitlines()) == 1
    assert readme.read_text() == "the user's notes\n"


def test_second_run_refuses_then_overwrites_only_its_own_files(checkpoint: Path, tmp_path: Path,
                                                               capsys: pytest.CaptureFixture[str]) -> None:
    src, out, base = _finished_run(checkpoint, tmp_path, capsys, 17)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    code, _, err = _run(base + ["--score-threshold", "0.5"], capsys)
    assert code == 2 and "--resume" in err and "--overwrite" in err and len(err.splitlines()) == 1
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    assert _run(base + ["--score-threshold", "0.5", "--overwrite"], capsys)[0] == 0
    assert json.loads((out / "detections.json").read_text())["score_threshold"] == 0.5
    assert "x.png.png" in detect.read_log(out / detect.LOG_NAME)[2]  # still known as ssd-detect's own file
    # a file the tool did not write, where it would put a drawing, is never replaced, even with --overwrite
    _picture(18).save(src / "y.jpg")
    (out / "y.jpg.png").write_bytes(b"the user's picture")
    code, _, err = _run(base + ["--overwrite"], capsys)
    assert code == 2 and "y.jpg.png" in err
    assert (out / "y.jpg.png").read_bytes() == b"the user's picture"


def test_default_backend_is_auto() -> None:
    assert detect.build_parser().parse_args(["c.pt", "x.png", "--out", "o"]).backend == "auto"


def test_out_must_not_be_the_input_folder(checkpoint: Path, tmp_path: Path,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    _picture(19).save(tmp_path / "x.png")
    code, _, err = _run([str(checkpoint), str(tmp_path), "--out", str(tmp_path), "--device", "cpu"], capsys)
    assert code == 2 and "is the input folder" in err
    assert sorted(p.name for p in tmp_path.iterdir()) == ["x.png"]
