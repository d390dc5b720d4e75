"""Writing output files without ever damaging a user's file (the rule: a tool replaces only what it wrote).

- :func:`atomic_write` writes a temporary sibling and renames it over the target, so an interrupted write (a
  Ctrl-C, a full disk) leaves either the old file or the new one, never half of one; the new file gets the mode
  a plain ``open`` gives (``0666 & ~umask``, or the replaced file's mode). :func:`append_text` appends whole
  lines, cut back to the previous length when the write fails.
- :class:`Journal`: the one ownership rule. A tool's JSON-lines journal in its output folder names the files
  the tool is about to write (``claim``) before it writes them; a file there is the tool's own to replace only
  when its journal claims it, never because of its name alone (``ssd-detect``'s ``detections.jsonl``, the
  run folder's ``written.jsonl``).
- :func:`lock_folder`: one run per output folder (``ssd-train --output-dir``, ``ssd-detect --out``, ``ssd-eval
  --out``): an OS lock (``flock``) on a lock file in the folder, released when the process ends, however it ends.
- :func:`check_output_path`: an output path that cannot be created (a file in the way) is refused before any
  slow work. :func:`refuse_existing`: the one message for "this would replace files that are already there".
- :func:`disk_error_line`: a full disk, a read-only folder or a denied permission met while writing, as one
  line naming what was being written and where (``ssd_torch.cli.run_cli`` prints it).
"""
from __future__ import annotations

import errno
import fcntl
import fnmatch
import hashlib
import json
import os
import tempfile
from pathlib import Path
from typing import Any, BinaryIO, Callable, Iterable, NamedTuple, NoReturn, Optional

from ssd_torch.errors import UserError

__all__ = ["atomic_write", "atomic_write_text", "append_text", "refuse_existing", "file_sha256", "Journal",
           "Claims", "lock_folder", "FolderLock", "LOCK_NAME", "check_output_path", "WriteFailed", "DISK_ERRNOS",
           "disk_error_line"]

_LISTED = 3  # existing files named in a refusal; the rest are counted
#: the lock file of :func:`lock_folder` (removed when the lock is released)
LOCK_NAME = ".ssd300.lock"
#: OSError numbers that mean "this place cannot take the file" rather than a bug: :func:`disk_error_line`
DISK_ERRNOS = frozenset({errno.ENOSPC, errno.EDQUOT, errno.EROFS, errno.EACCES})
_REASONS = {errno.ENOSPC: "no space left on the device", errno.EDQUOT: "the disk quota is used up",
            errno.EROFS: "the file system is read-only", errno.EACCES: "permission denied"}


class WriteFailed(OSError):
    """A write of ``target`` that failed with an errno of :data:`DISK_ERRNOS` (raised by :func:`atomic_write`
    and :func:`append_text` from the original error): ``target`` says what was being written."""

    def __init__(self, err: OSError, target: Path) -> None:
        super().__init__(err.errno, err.strerror)
        self.target = Path(target)


def _disk_oserror(exc: BaseException | None) -> Optional[OSError]:
    """The first OSError of :data:`DISK_ERRNOS` in ``exc``'s chain (``torch.save`` on a full disk raises a
    RuntimeError whose context is the ENOSPC), else None."""
    seen = set()
    while exc is not None and id(exc) not in seen:
        seen.add(id(exc))
        if isinstance(exc, OSError) and exc.errno in DISK_ERRNOS:
            return exc
        exc = exc.__cause__ or exc.__context__
    return None


def _reraise(exc: BaseException, target: Path) -> NoReturn:
    """Raise ``exc`` again, as a :class:`WriteFailed` naming ``target`` when a disk error is in its chain (an
    inner write that already named its target keeps that name)."""
    err = _disk_oserror(exc)
    if err is None or isinstance(err, WriteFailed):
        raise exc
    raise WriteFailed(err, target) from exc


def disk_error_line(exc: BaseException) -> Optional[str]:
    """One line for a disk error (:data:`DISK_ERRNOS`) anywhere in ``exc``'s chain, else None: the reason,
    what was being written, in which folder, and what is safe (every write here is atomic or cut back)."""
    err = _disk_oserror(exc)
    if err is None:
        return None
    target = err.target if isinstance(err, WriteFailed) else (Path(err.filename) if err.filename else None)
    reason = _REASONS.get(err.errno or 0, err.strerror)
    where = "" if target is None else f" while writing {target.name} in folder {target.parent}"
    return (f"{reason}{where} ({errno.errorcode.get(err.errno or 0, err.errno)}); every file already there is "
            f"intact (files are written whole or not at all)")


def _umask() -> int:
    """The process's umask, read without changing it (Linux: /proc/self/status), else set-and-restore."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _new_file_mode(path: Path) -> int:
    """The mode a plain ``open(path, "w")`` leaves: the existing file's, else ``0666 & ~umask``."""
    try:
        return path.stat().st_mode & 0o7777
    except OSError:
        return 0o666 & ~_umask()


def atomic_write(path: str | os.PathLike[str], write: Callable[[BinaryIO], None]) -> Path:
    """Call ``write(f)`` on a temporary file next to ``path`` (same folder, so the rename is atomic), fsync it
    and rename it to ``path``. On any exception, KeyboardInterrupt included, the temporary file is removed
    and ``path`` is untouched; a disk error (:data:`DISK_ERRNOS`) comes out as :class:`WriteFailed`."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as e:
        _reraise(e, path)
    try:
        os.fchmod(fd, _new_file_mode(path))  # mkstemp's 0600 would hide the file from the user's group
        with os.fdopen(fd, "wb") as f:
            write(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:  # noqa: BLE001 - re-raised (a disk error as WriteFailed)
        if os.path.exists(tmp):
            os.unlink(tmp)
        _reraise(e, path)
    return path


def atomic_write_text(path: str | os.PathLike[str], text: str) -> Path:
    """:func:`atomic_write` of UTF-8 ``text``."""
    return atomic_write(path, lambda f: f.write(text.encode("utf-8")))


def append_text(path: str | os.PathLike[str], text: str) -> Path:
    """Append ``text`` (whole lines) to ``path`` (created with :func:`atomic_write`'s mode) and fsync it. A line
    torn by an earlier interruption is ended first, so new lines stay whole; when the write fails (a full disk)
    the file is cut back to its previous length and the error comes out as :class:`WriteFailed`."""
    path = Path(path)
    data = text.encode("utf-8")
    try:
        fd = os.open(path, os.O_RDWR | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC, _new_file_mode(path))
    except OSError as e:
        _reraise(e, path)
    try:
        size = os.fstat(fd).st_size
        if size and os.pread(fd, 1, size - 1) != b"\n":
            data = b"\n" + data
        try:
            view = memoryview(data)
            while view:
                view = view[os.write(fd, view):]
            os.fsync(fd)
        except BaseException as e:  # noqa: BLE001 - re-raised (a disk error as WriteFailed)
            os.ftruncate(fd, size)
            _reraise(e, path)
    finally:
        os.close(fd)
    return path


def refuse_existing(paths: Iterable[Path], what: str, way_out: str) -> None:
    """Raise a one-line :class:`UserError` naming the files of ``paths`` that exist: ``"<what> would replace
    a, b (+N more), which already exist; <way_out>"``. Nothing happens when none exists."""
    existing = [p for p in paths if p.exists()]
    if existing:
        shown = ", ".join(str(p) for p in existing[:_LISTED])
        more = f" (+{len(existing) - _LISTED} more)" if len(existing) > _LISTED else ""
        raise UserError(f"{what} would replace {shown}{more}, which already exist{'s' if len(existing) == 1 else ''}; "
                        f"{way_out}")


def check_output_path(path: str | os.PathLike[str], flag: str, *, folder: bool) -> Path:
    """Refuse (one-line :class:`UserError`) an output path that cannot be written, before any slow work: a
    folder output (``folder=True``) that is a file, a file output that is a folder, or any output under a
    file (``--out photo.jpg/sub``). ``flag`` names the option in the message. Returns ``Path(path)``."""
    path = Path(path)
    if folder and path.exists() and not path.is_dir():
        raise UserError(f"{flag} {path} is a file, not a folder; give a folder (a new or an existing one)")
    if not folder and path.is_dir():
        raise UserError(f"{flag} {path} is a folder; give a file name (e.g. {path / 'out'}...)")
    for parent in path.parents:
        if parent.exists() and not parent.is_dir():
            raise UserError(f"{flag} {path} lies under {parent}, which is a file, not a folder; choose another path")
    return path


def file_sha256(path: str | os.PathLike[str]) -> str:
    """Hex SHA-256 of the file's bytes, read in 1 MiB blocks."""
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


class Claims(NamedTuple):
    """What a :class:`Journal` claims: exact relative names and glob ``patterns`` (POSIX, relative to the
    journal's folder)."""

    files: frozenset[str]
    patterns: tuple[str, ...]

    def owns(self, relative: str) -> bool:
        """True when the journal claims ``relative``, or it is the temp file of an interrupted atomic write
        (``.<name>.<random>.tmp`` / ``.link``) of a claimed name."""
        folder, _, name = relative.rpartition("/")
        if name.startswith(".") and name.endswith((".tmp", ".link")) and name.count(".") >= 3:
            relative = f"{folder}/{name[1:].rsplit('.', 2)[0]}".lstrip("/")
        return relative in self.files or any(fnmatch.fnmatchcase(relative, p) for p in self.patterns)


class Journal:
    """A tool's JSON-lines journal ``path``: a ``{"type": "run", "format": fmt, ...}`` header, then records,
    among them the claims ``{"type": "writing", "files": [...], "patterns": [...]}`` appended BEFORE the files
    are written. A file at ``path`` without that header is not a journal of this tool (a user's file)."""

    def __init__(self, path: str | os.PathLike[str], fmt: str) -> None:
        self.path, self.format = Path(path), fmt

    def records(self) -> list[dict[str, Any]]:
        """Every record (a line torn by an interruption is skipped); [] when the file is not this journal."""
        try:
            lines = self.path.read_text(encoding="utf-8").splitlines()
        except (OSError, UnicodeDecodeError):
            return []
        records = []
        for line in lines:
            try:
                rec = json.loads(line)
            except json.JSONDecodeError:
                continue
            if isinstance(rec, dict):
                records.append(rec)
        ours = bool(records) and records[0].get("type") == "run" and records[0].get("format") == self.format
        return records if ours else []

    def header(self) -> Optional[dict[str, Any]]:
        """The header record, None when there is no journal of this tool at ``path``."""
        records = self.records()
        return records[0] if records else None

    def claims(self, records: Optional[list[dict[str, Any]]] = None) -> Claims:
        """The union of the ``"writing"`` records (``"drawings"``: the key of ssd-detect's first journals)."""
        files: set[str] = set()
        patterns: list[str] = []
        for rec in self.records() if records is None else records:
            if rec.get("type") == "writing":
                files.update(rec.get("files", rec.get("drawings", [])))
                patterns.extend(p for p in rec.get("patterns", []) if p not in patterns)
        return Claims(frozenset(files), tuple(patterns))

    def start(self, header: dict[str, Any], files: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        """Write a new journal (atomically): the header, then a claim of ``files`` / ``patterns`` if any."""
        lines = [{"type": "run", "format": self.format, **header}]
        files, patterns = sorted(files), list(patterns)
        if files or patterns:
            lines.append(_claim(files, patterns))
        atomic_write_text(self.path, "".join(json.dumps(line) + "\n" for line in lines))

    def append(self, records: Iterable[dict[str, Any]]) -> None:
        """Append records durably (:func:`append_text`)."""
        text = "".join(json.dumps(r) + "\n" for r in records)
        if text:
            append_text(self.path, text)

    def claim(self, files: Iterable[str] = (), patterns: Iterable[str] = ()) -> None:
        """Record that the tool is about to write ``files`` (and whatever matches ``patterns``)."""
        files, patterns = sorted(files), list(patterns)
        if files or patterns:
            self.append([_claim(files, patterns)])


def _claim(files: list[str], patterns: list[str]) -> dict[str, Any]:
    return {"type": "writing", "files": files, **({"patterns": patterns} if patterns else {})}


class FolderLock:
    """An exclusive ``flock`` on ``folder/.ssd300.lock`` (:func:`lock_folder`); ``release`` (or leaving the
    ``with`` block) unlocks and removes the lock file, and a folder that the lock created and that stayed empty."""

    def __init__(self, path: Path, fd: int, created: bool) -> None:
        self.path, self._fd, self._created = path, fd, created

    def release(self) -> None:
        if self._fd is None:
            return
        try:
            if _same_file(self._fd, self.path):  # still ours (not renamed away with its folder)
                self.path.unlink()
        finally:
            os.close(self._fd)
            self._fd = None
        if self._created:
            try:
                self.path.parent.rmdir()  # only when empty: a run refused at once leaves no folder behind
            except OSError:
                pass

    def __enter__(self) -> "FolderLock":
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def _same_file(fd: int, path: Path) -> bool:
    try:
        a, b = os.fstat(fd), os.stat(path)
    except OSError:
        return False
    return (a.st_dev, a.st_ino) == (b.st_dev, b.st_ino)


def lock_folder(folder: str | os.PathLike[str], tool: str, flag: str) -> FolderLock:
    """Make ``folder`` (and its parents) and lock it for this process: a second run into the same folder, by
    any tool that locks, is refused with one line naming the PID that holds it (``flag`` names the option to
    change). The OS drops the lock when the process dies, so a killed run never leaves the folder locked."""
    folder = check_output_path(folder, flag, folder=True)
    created = not folder.exists()
    path = folder / LOCK_NAME
    try:
        folder.mkdir(parents=True, exist_ok=True)
        while True:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC, 0o644)
            try:
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            except BlockingIOError:
                holder = os.pread(fd, 200, 0).decode("utf-8", "replace").split()
                os.close(fd)
                pid, other = (holder[0] if holder else "unknown"), (holder[1] if len(holder) > 1 else "another run")
                raise UserError(f"{folder} is in use by {other} (PID {pid}), which is writing there now; wait for "
                                f"it to finish or choose another {flag}") from None
            if _same_file(fd, path):  # else its holder removed it between our open and flock: lock the new one
                break
            os.close(fd)
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()} {tool}\n".encode(), 0)
    except OSError as e:
        _reraise(e, path)
    return FolderLock(path, fd, created)
