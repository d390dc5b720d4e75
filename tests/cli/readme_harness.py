"""Run the code blocks of a Markdown file (README.md) as tests; what a block must satisfy is stated here.

**Python blocks** (```` ```python ````) are executed, in-process, in a fresh empty folder (the test's
``tmp_path``), after the harness has created the inputs the block names:

- every relative path in a string literal of the code, or in a setup command, that ends in ``.pt``/``.pth``
  becomes a tiny checkpoint (random slim SSD300, classes ``background`` + the synthetic shapes), except the
  demo's own :data:`DEMO_CHECKPOINT`, which is a real trained demo-preset model (a short ``ssd-train --preset
  demo`` run, once per test session: a claim about detections is checked on a model that detects); one that
  ends in an image suffix (``.jpg .jpeg .png .webp .bmp .tif .tiff``) a synthetic 160x120 scene;
- a comment line ``# $ <command>`` (e.g. ``# $ ssd-export best.pt --onnx model.onnx --bake-preprocess uint8``)
  is a setup command: it is run first, by the tool's own ``main``, and must exit 0. Every other file (an ONNX
  model, a sidecar, a results folder) must be made by such a command or by the block itself.

A block must be self-contained (define every name it uses), run on CPU within seconds, and need no network.

**Shell blocks** (``bash``, ``sh``, ``shell``, ``console``): each command line (backslash continuations joined,
``# comments`` dropped, split at ``&&``, ``||``, ``;`` and ``|``, leading ``VAR=value`` stripped) is checked
without running it: ``ssd-*`` tools (the console scripts of setup.cfg) and ``python -m <module>`` /
``torchrun ... -m <module>`` of this repository's packages have their arguments parsed by the tool's own
argparse parser (so a documented flag that does not exist fails); ``make TARGET [VAR=value]`` needs the
target (and the variable) in the Makefile; ``bash <script>`` needs the script. Placeholders: a ``...`` token
is dropped and ``[--flag]`` is read as ``--flag``. Other commands (``pytest``, ``pip``) are not checked.

A block preceded by ``<!-- readme-test: skip REASON -->`` is not run (the reason is required and reported).
"""
from __future__ import annotations

import ast
import configparser
import contextlib
import importlib
import re
import shlex
import shutil
import sys
from pathlib import Path
from typing import Iterator, NamedTuple, Sequence
from unittest import mock

ROOT = Path(__file__).resolve().parents[2]
PYTHON_LANGS = ("python", "py", "python3")
SHELL_LANGS = ("bash", "sh", "shell", "console")
CHECKPOINT_SUFFIXES = (".pt", ".pth")
IMAGE_SUFFIXES = (".jpg", ".jpeg", ".png", ".webp", ".bmp", ".tif", ".tiff")
REPO_PACKAGES = ("ssd_torch", "benchmarks", "reference", "kernels")
_FENCE = re.compile(r"^```(\w*)\s*$")
_SKIP = re.compile(r"<!--\s*readme-test:\s*skip\s*(.*?)\s*-->")
_SEPARATORS = {"&&", "||", ";", "|"}
#: The checkpoint ``make demo`` writes; a block that loads it gets a trained demo-preset model.
DEMO_CHECKPOINT = "runs/demo/checkpoints/best.pt"
#: Optimizer steps of that short run (batch 8, 32 synthetic scenes): enough to detect the shapes with
#: confident scores, a minute or two on 2 CPU cores.
DEMO_STEPS = 60
_TRAINED: dict[str, Path] = {}


class Block(NamedTuple):
    """A fenced code block: language, code, 1-based line of its opening fence, skip reason (None: run it)."""

    lang: str
    code: str
    line: int
    skip: str | None


def code_blocks(markdown: str) -> list[Block]:
    """The fenced blocks of ``markdown`` in order (an unclosed fence is an AssertionError)."""
    blocks, lines, i = [], markdown.splitlines(), 0
    while i < len(lines):
        fence = _FENCE.match(lines[i])
        if not fence:
            i += 1
            continue
        end = next((j for j in range(i + 1, len(lines)) if lines[j].startswith("```")), None)
        assert end is not None, f"line {i + 1}: code block never closed"
        before = next((lines[j] for j in range(i - 1, -1, -1) if lines[j].strip()), "")
        skip = _SKIP.search(before)
        if skip is not None:
            assert skip.group(1), f"line {i + 1}: '<!-- readme-test: skip -->' needs a reason"
        blocks.append(Block(fence.group(1).lower(), "\n".join(lines[i + 1:end]), i + 1,
                            skip.group(1) if skip else None))
        i = end + 1
    return blocks


# ---- shell blocks -------------------------------------------------------------------------------------
def command_lines(code: str) -> list[list[str]]:
    """The commands of a shell block as argv lists (module docstring: joining, comments, separators)."""
    logical, buf = [], ""
    for raw in code.splitlines():
        text = raw.rstrip()
        if text.endswith("\\"):
            buf += text[:-1] + " "
            continue
        logical.append(buf + text)
        buf = ""
    commands: list[list[str]] = []
    for line in logical + ([buf] if buf else []):
        current: list[str] = []
        for token in shlex.split(line, comments=True):
            if token in _SEPARATORS:
                commands.append(current)
                current = []
            else:
                current.append(token)
        commands.append(current)
    return [_placeholders(c) for c in commands if c]


def _placeholders(argv: list[str]) -> list[str]:
    while argv and re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*=.*", argv[0]):  # VAR=value prefix
        argv = argv[1:]
    out = [t[1:-1] if len(t) > 2 and t.startswith("[") and t.endswith("]") else t for t in argv]
    return [t for t in out if t != "..."]


def console_scripts() -> dict[str, str]:
    """``{"ssd-detect": "ssd_torch.cli.detect:main", ...}`` from setup.cfg."""
    cfg = configparser.ConfigParser()
    cfg.read(ROOT / "setup.cfg")
    entries = cfg.get("options.entry_points", "console_scripts", fallback="")
    return {name.strip(): target.strip() for name, _, target in
            (line.partition("=") for line in entries.splitlines() if "=" in line)}


class _Parsed(BaseException):
    """Raised by the patched ``parse_args`` once a tool's arguments parsed: the tool itself never runs."""


def parse_only(module_name: str, func: str, argv: Sequence[str]) -> None:
    """Call ``module.func(argv)`` with argparse stopped right after parsing; a parse error is an AssertionError
    carrying argparse's message."""
    import argparse
    import io

    real = argparse.ArgumentParser.parse_args

    def parse_then_stop(self, args=None, namespace=None):
        raise _Parsed(real(self, args, namespace))

    err = io.StringIO()
    main = getattr(importlib.import_module(module_name), func)
    with mock.patch.object(argparse.ArgumentParser, "parse_args", parse_then_stop), \
            contextlib.redirect_stderr(err):
        try:
            main(list(argv))
        except _Parsed:
            return
        except SystemExit:
            raise AssertionError(f"{module_name} rejects {' '.join(argv)!r}: {err.getvalue().strip()}") from None
    raise AssertionError(f"{module_name}.{func} returned without parsing its arguments with argparse")


def _python_module(argv: list[str]) -> tuple[str, list[str]] | None:
    """``(module, args)`` of ``python -m module args`` / ``torchrun ... -m module args``."""
    exe = Path(argv[0]).name
    if not (exe.startswith("python") or exe == "torchrun") or "-m" not in argv:
        return None
    at = argv.index("-m")
    return argv[at + 1], argv[at + 2:]


def check_command(argv: list[str]) -> str:
    """Check one shell command (module docstring); returns what was checked ("not checked: ..." for others)."""
    scripts = console_scripts()
    if argv[0] in scripts:
        module, func = scripts[argv[0]].split(":")
        parse_only(module, func, argv[1:])
        return f"parsed by {module}"
    target = _python_module(argv)
    if target is not None:
        module, args = target
        if module.split(".")[0] not in REPO_PACKAGES:
            return f"not checked: {module} is not part of this repository"
        parse_only(module, "main", args)
        return f"parsed by {module}"
    if argv[0] == "make":
        return _check_make(argv[1:])
    if argv[0] in ("bash", "sh"):
        assert (ROOT / argv[1]).is_file(), f"{' '.join(argv)}: no script {argv[1]} in the repository"
        return f"script {argv[1]} exists"
    return f"not checked: {argv[0]}"


def _check_make(args: list[str]) -> str:
    makefile = (ROOT / "Makefile").read_text()
    targets = set(re.findall(r"^([A-Za-z0-9_.-]+)\s*:", makefile, flags=re.M))
    for arg in args:
        name = arg.split("=")[0]
        if "=" in arg:
            assert re.search(rf"\$\(\s*{re.escape(name)}\s*\)", makefile), f"make: the Makefile never uses {name}"
        else:
            assert arg in targets, f"make {arg}: no such target in the Makefile ({', '.join(sorted(targets))})"
    return "make targets exist"


# ---- python blocks ------------------------------------------------------------------------------------
def setup_commands(code: str) -> list[list[str]]:
    """The ``# $ <command>`` lines of a python block, as argv lists."""
    return [shlex.split(m.group(1)) for m in re.finditer(r"^\s*#\s*\$\s+(.+)$", code, flags=re.M)]


def _literals(code: str) -> Iterator[str]:
    for node in ast.walk(ast.parse(code)):
        if isinstance(node, ast.Constant) and isinstance(node.value, str):
            yield node.value


def input_files(code: str) -> list[str]:
    """Relative paths the block names (string literals and setup-command arguments) that the harness makes."""
    names = list(_literals(code)) + [t for cmd in setup_commands(code) for t in cmd]
    wanted = CHECKPOINT_SUFFIXES + IMAGE_SUFFIXES
    return sorted({n for n in names if n.lower().endswith(wanted) and not Path(n).is_absolute()
                   and " " not in n and ".." not in Path(n).parts})


def trained_demo_checkpoint(folder: Path) -> Path:
    """``best.pt`` of a :data:`DEMO_STEPS`-step ``ssd-train --preset demo`` run (synthetic scenes) under
    ``folder``; trained once per process, later calls return the same file."""
    if "demo" not in _TRAINED:
        sys.path.insert(0, str(ROOT / "tests" / "train"))
        from train_fixtures import tiny_run_args

        from ssd_torch.cli import train

        run = folder / "demo-run"
        args = tiny_run_args(folder / "demo-data", run, trainval=32, test=4, steps=DEMO_STEPS, batch=8)
        assert train.main(args) == 0, "the README harness's short demo training failed"
        _TRAINED["demo"] = run / "checkpoints" / "best.pt"
    return _TRAINED["demo"]


def make_inputs(code: str, folder: Path) -> list[Path]:
    """Create the block's input files under ``folder`` (module docstring); returns them."""
    import numpy as np

    from cli_fixtures import write_tiny_checkpoint
    from ssd_torch.data.synthetic import SYNTHETIC_CLASSES, render_image

    made = []
    for i, name in enumerate(input_files(code)):
        path = folder / name
        if path.exists():
            continue
        path.parent.mkdir(parents=True, exist_ok=True)
        if name == DEMO_CHECKPOINT:
            shutil.copyfile(trained_demo_checkpoint(folder / ".harness"), path)
        elif name.lower().endswith(CHECKPOINT_SUFFIXES):
            write_tiny_checkpoint(path, ["background", *SYNTHETIC_CLASSES], seed=i)
        else:
            render_image(160, 120, np.random.default_rng(i))[0].save(path)
        made.append(path)
    return made


def run_python_block(code: str, folder: Path, origin: str) -> None:
    """Make the inputs, run the setup commands (each must exit 0), then execute ``code`` with ``folder`` as the
    current directory (the caller arranges the chdir). Errors propagate."""
    make_inputs(code, folder)
    scripts = console_scripts()
    for argv in setup_commands(code):
        assert argv[0] in scripts, f"{origin}: setup command {argv[0]!r} is not one of {sorted(scripts)}"
        module, func = scripts[argv[0]].split(":")
        code_ = getattr(importlib.import_module(module), func)(argv[1:])
        assert code_ == 0, f"{origin}: setup command {' '.join(argv)!r} exited {code_}"
    exec(compile(code, origin, "exec"), {"__name__": "__readme__"})  # noqa: S102 - the documented snippet
