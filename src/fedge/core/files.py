"""Output folders that fedge never destroys, written so that a failure leaves nothing half-written.

The rules, for every folder fedge writes (run folders, LoRA runs, reports):

- the folder is filled as a hidden temporary sibling and renamed into place at the end, so a
  crash leaves the target as it was;
- a new or empty folder is used as is;
- an existing folder that fedge did not write (no ``.fedge-<kind>`` marker) is refused, with
  or without ``overwrite``: fedge deletes nothing it did not create;
- an earlier fedge folder of the same kind is refused unless ``overwrite``; then only that
  folder is replaced, by a swap (the old one is moved aside, the new one renamed in, the old
  one removed), so at every moment one of the two is complete on disk;
- with ``unique`` (a name fedge chose, not one the user gave) an occupied name gets a
  ``-2``, ``-3`` ... suffix instead, so runs never replace each other;
- the working directory, or a folder that contains it, is never a target.

:func:`claim_output` does the checks and creates the temporary sibling at once, so an
unwritable location fails before any long work; :meth:`OutputFolder.commit` moves it into place.
"""

from __future__ import annotations

import errno
import json
import os
import shutil
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from fedge.core.errors import ConfigError

LEGACY_FILES = {"run": ("config.toml", "summary.json", "metrics.jsonl"), "report": ("report.html",)}
"""Files that identify a folder written by a fedge version from before the marker."""


def marker_name(kind: str) -> str:
    return f".fedge-{kind}"


def is_fedge_folder(path: Path, kind: str = "run") -> bool:
    """Whether ``path`` is a folder fedge wrote as a ``kind`` (its marker, or an older fedge's files)."""
    if not path.is_dir() or path.is_symlink():
        return False
    if (path / marker_name(kind)).is_file():
        return True
    legacy = LEGACY_FILES.get(kind, ())
    return bool(legacy) and all((path / name).is_file() for name in legacy)


def _label(kind: str) -> str:
    return "fedge run" if kind == "run" else f"fedge {kind}"


def _cwd_problem(target: Path) -> str | None:
    cwd = Path.cwd().resolve()
    real = target.resolve()
    if real == cwd or real in cwd.parents:
        return f"{target}: is the working directory or contains it; choose a new folder for the output"
    return None


def _problem(target: Path, kind: str, overwrite: bool) -> str | None:
    """Why ``target`` cannot receive the new folder, or None when it can."""
    cwd_problem = _cwd_problem(target)
    if cwd_problem is not None:
        return cwd_problem
    if target.is_symlink():
        return f"{target}: is a symbolic link; choose a new folder for the output"
    if not target.exists():
        return None
    if not target.is_dir():
        return f"{target}: exists and is not a folder; choose another output folder"
    if not any(target.iterdir()):
        return None
    if is_fedge_folder(target, kind):
        if overwrite:
            return None
        return f"{target}: holds an earlier {_label(kind)}; pass --overwrite to replace it, or choose another output"
    return (
        f"{target}: exists, is not empty and is not a {_label(kind)}; "
        "fedge never writes into or deletes such a folder; choose another output"
    )


def _free_name(target: Path, kind: str) -> Path:
    """``target`` itself, or the first of ``target-2``, ``target-3`` ... that can take the output."""
    candidate, n = target, 1
    while candidate.exists() or candidate.is_symlink():
        if _problem(candidate, kind, False) is None:
            return candidate
        n += 1
        candidate = target.with_name(f"{target.name}-{n}")
    return candidate


def _create_parent(target: Path) -> None:
    parent = target.parent
    try:
        parent.mkdir(parents=True, exist_ok=True)
    except (FileExistsError, NotADirectoryError):
        blocker = next((p for p in [parent, *parent.parents] if p.exists() and not p.is_dir()), parent)
        raise ConfigError(f"{target}: cannot create the output folder: {blocker} is a file, not a folder") from None
    except OSError as exc:
        raise ConfigError(f"{target}: cannot create the output folder: {exc.strerror or exc}") from None


@dataclass
class OutputFolder:
    """A claimed output location: fill :attr:`tmp`, then :meth:`commit` (or :meth:`discard`)."""

    target: Path
    tmp: Path
    kind: str
    overwrite: bool
    unique: bool

    def commit(self) -> Path:
        """Move the filled folder into place and return where it is.

        The target is checked again: if something took its place meanwhile that may not be
        replaced, the output goes to a free ``-N`` name instead (and, for a name the user
        chose, a :class:`ConfigError` says where it went).
        """
        problem = _problem(self.target, self.kind, self.overwrite)
        if problem is not None:
            wanted = self.target
            self.target = _free_name(wanted, self.kind)
            self._move_in()
            if not self.unique:
                raise ConfigError(f"{problem}; the output was written to {self.target} instead")
            return self.target
        self._move_in()
        return self.target

    def _move_in(self) -> None:
        if self.target.is_dir() and any(self.target.iterdir()):
            self._swap()
            return
        try:
            os.rename(self.tmp, self.target)  # an empty folder at the target is replaced atomically
        except OSError as exc:
            if exc.errno in (errno.ENOTEMPTY, errno.EEXIST) and self.unique:
                self.target = _free_name(self.target, self.kind)
                os.rename(self.tmp, self.target)
            else:
                raise

    def _swap(self) -> None:
        old = Path(tempfile.mkdtemp(prefix=f".{self.target.name}.old-", dir=self.target.parent))
        old.rmdir()
        os.rename(self.target, old)
        try:
            os.rename(self.tmp, self.target)
        except BaseException:
            os.rename(old, self.target)
            raise
        shutil.rmtree(old, ignore_errors=True)

    def discard(self) -> None:
        shutil.rmtree(self.tmp, ignore_errors=True)


def claim_output(out: str | Path, *, kind: str = "run", overwrite: bool = False, unique: bool = False) -> OutputFolder:
    """Check that ``out`` may receive a new ``kind`` folder and create its temporary sibling.

    Raises :class:`ConfigError` (one line) when the location is refused or not writable.
    With ``unique`` an occupied ``out`` is not an error: a ``-2``, ``-3`` ... suffix is added
    (unless ``overwrite``, which replaces an earlier fedge folder there).
    """
    target = Path(os.path.abspath(out))
    if unique and not overwrite and _cwd_problem(target) is None:  # not a sibling of the working directory
        target = _free_name(target, kind)
    problem = _problem(target, kind, overwrite)
    if problem is not None:
        raise ConfigError(problem)
    _create_parent(target)
    try:
        tmp = Path(tempfile.mkdtemp(prefix=f".{target.name}.", dir=target.parent))
        (tmp / marker_name(kind)).write_text(json.dumps({"kind": kind, "created": time.strftime("%Y-%m-%dT%H:%M:%S")}))
    except OSError as exc:
        raise ConfigError(f"{target}: the output location is not writable: {exc.strerror or exc}") from None
    return OutputFolder(target=target, tmp=tmp, kind=kind, overwrite=overwrite, unique=unique)


@contextmanager
def output_folder(
    out: str | Path, *, kind: str = "run", overwrite: bool = False, unique: bool = False
) -> Iterator[OutputFolder]:
    """Claim ``out``, yield the :class:`OutputFolder` to fill (its ``tmp``), commit it on success.

    On any error the temporary folder is removed and ``out`` is left as it was; after the
    block, ``folder.target`` is where the output went (with ``unique``, maybe ``out-2`` ...).
    """
    folder = claim_output(out, kind=kind, overwrite=overwrite, unique=unique)
    try:
        yield folder
        folder.commit()
    except BaseException:
        folder.discard()
        raise


@contextmanager
def atomic_folder(
    out: str | Path, *, kind: str = "run", overwrite: bool = False, unique: bool = False
) -> Iterator[Path]:
    """Yield a fresh temporary folder to fill; on success it is moved to ``out`` by the rules above."""
    with output_folder(out, kind=kind, overwrite=overwrite, unique=unique) as folder:
        yield folder.tmp
