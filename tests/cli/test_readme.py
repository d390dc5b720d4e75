"""Every code block of README.md is a test (issue #10 "Docs that match reality"); rules in ``readme_harness``.

The README is read when the tests are collected, so a rewritten README is checked as it is. The harness itself
is tested on made-up Markdown: a flag that does not exist, a missing make target, a failing snippet must fail.
"""
from __future__ import annotations

import inspect
import textwrap
from pathlib import Path

import pytest

from readme_harness import (PYTHON_LANGS, ROOT, SHELL_LANGS, check_command, code_blocks, command_lines,
                            input_files, run_python_block, setup_commands)

README = ROOT / "README.md"
BLOCKS = code_blocks(README.read_text(encoding="utf-8"))


def _id(block) -> str:
    return f"{block.lang}-line{block.line}"


@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in SHELL_LANGS], ids=_id)
def test_readme_shell_commands_parse(block) -> None:
    if block.skip:
        pytest.skip(block.skip)
    for argv in command_lines(block.code):
        check_command(argv)


@pytest.mark.slow
@pytest.mark.parametrize("block", [b for b in BLOCKS if b.lang in PYTHON_LANGS], ids=_id)
def test_readme_python_blocks_run(block, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    if block.skip:
        pytest.skip(block.skip)
    monkeypatch.chdir(tmp_path)
    run_python_block(block.code, tmp_path, f"README.md:{block.line}")


def test_every_block_has_a_known_language() -> None:
    """An untagged or mistyped fence would silently escape both tests above."""
    known = PYTHON_LANGS + SHELL_LANGS + ("text", "json", "markdown", "yaml", "toml", "ini")
    assert [(_id(b)) for b in BLOCKS if b.lang not in known] == []


# ---- the harness can fail -------------------------------------------------------------------------------
def test_blocks_lines_and_skip_reasons() -> None:
    md = "# t\n\n```bash\nssd-detect a.pt b --out o\n```\n<!-- readme-test: skip needs a GPU -->\n```python\nx\n```\n"
    blocks = code_blocks(md)
    assert [(b.lang, b.line, b.skip) for b in blocks] == [("bash", 3, None), ("python", 7, "needs a GPU")]
    with pytest.raises(AssertionError, match="needs a reason"):
        code_blocks("<!-- readme-test: skip -->\n```bash\nls\n```\n")
    with pytest.raises(AssertionError, match="never closed"):
        code_blocks("```bash\nls\n")


def test_command_lines_join_split_and_drop_placeholders() -> None:
    code = ("FOO=1 ssd-eval ckpt.pt --data d \\\n   --out o [--coco]  # a comment\n"
            "ssd-train ... --resume auto && make test\n")
    assert command_lines(code) == [["ssd-eval", "ckpt.pt", "--data", "d", "--out", "o", "--coco"],
                                   ["ssd-train", "--resume", "auto"], ["make", "test"]]


def test_a_flag_that_does_not_exist_fails() -> None:
    check_command(["ssd-detect", "a.pt", "imgs", "--out", "o", "--recursive", "--classes", "dog"])
    with pytest.raises(AssertionError, match="unrecognized arguments: --no-such-flag"):
        check_command(["ssd-detect", "a.pt", "imgs", "--out", "o", "--no-such-flag"])
    with pytest.raises(AssertionError, match="required: --onnx"):
        check_command(["ssd-export", "a.pt"])
    with pytest.raises(AssertionError, match="invalid choice"):
        check_command(["python", "-m", "ssd_torch.cli.detect", "a.pt", "i", "--out", "o", "--backend", "tpu"])
    assert check_command(["torchrun", "--nproc_per_node=2", "-m", "ssd_torch.cli.train", "--preset", "demo"]) \
        == "parsed by ssd_torch.cli.train"
    assert check_command(["python", "-m", "pytest", "-q"]).startswith("not checked")


def test_make_targets_variables_and_scripts_are_checked() -> None:
    assert check_command(["make", "bench", "RECORD=1"]) == "make targets exist"
    with pytest.raises(AssertionError, match="no such target"):
        check_command(["make", "benchmark"])
    with pytest.raises(AssertionError, match="never uses RECROD"):
        check_command(["make", "bench", "RECROD=1"])
    with pytest.raises(AssertionError, match="no script"):
        check_command(["bash", "benchmarks/no_such_suite.sh"])


def test_python_blocks_get_their_inputs_and_failures_propagate(tmp_path: Path,
                                                               monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    code = ("import ssd_torch\n"
            "result = ssd_torch.Detector.from_checkpoint('ckpt/tiny.pt', device='cpu')('pics/a.jpg')\n"
            "assert result.width == 160 and result.height == 120\n")
    assert input_files(code) == ["ckpt/tiny.pt", "pics/a.jpg"]
    run_python_block(code, tmp_path, "md:1")
    with pytest.raises(ZeroDivisionError):
        run_python_block("1 / 0", tmp_path, "md:2")
    with pytest.raises(FileNotFoundError):  # files that are not inputs must be made by the block or a command
        run_python_block("open('model.onnx', 'rb')", tmp_path, "md:3")
    with pytest.raises(AssertionError, match="exited 2"):
        run_python_block("# $ ssd-export missing/none.txt --onnx m.onnx\n", tmp_path, "md:4")


def _literal_block(doc: str) -> str:
    """The indented block after the first ``::`` of a docstring."""
    after = doc.split("::\n", 1)[1]
    lines = []
    for line in after.splitlines():
        if line.strip() and not line.startswith(" "):
            break
        lines.append(line)
    return textwrap.dedent("\n".join(lines)).strip() + "\n"


@pytest.mark.slow
@pytest.mark.parametrize("module", ["ssd_torch.detector", "ssd_torch.cli.export"])
def test_docstring_examples_run(module: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    pytest.importorskip("onnxruntime", reason="the ONNX example needs onnxruntime (optional extra)")
    monkeypatch.chdir(tmp_path)
    doc = inspect.getdoc(__import__(module, fromlist=["_"]))
    code = _literal_block(doc)
    if module.endswith("export"):
        assert setup_commands(code)  # the example says how its ONNX model was made
    run_python_block(code, tmp_path, f"{module} docstring")
