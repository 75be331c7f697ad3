"""Atomic file writes: write to a temporary file beside the target, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from napari_medseg.errors import OutputExistsError


def _umask() -> int:
    """The process umask, read without changing it where Linux allows (``/proc``), else set and restored."""
    try:
        with open("/proc/self/status", encoding="ascii") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError):
        pass
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def public_mode(directory: bool = False) -> int:
    """The mode a plain ``open()``/``mkdir()`` would give (0o644/0o755 under the usual umask 022).

    ``tempfile`` creates private files (0o600) and folders (0o700); outputs that users share with
    colleagues and other tools get the ordinary permissions instead.
    """
    return (0o777 if directory else 0o666) & ~_umask()


def temp_dir_beside(target: Path, prefix: str) -> Path:
    """A new temporary folder next to ``target`` with ordinary permissions, to be renamed onto it."""
    tmp = Path(tempfile.mkdtemp(prefix=prefix, dir=target.parent))
    with contextlib.suppress(OSError):  # a filesystem without permissions (vfat) keeps its own
        os.chmod(tmp, public_mode(directory=True))
    return tmp


def check_overwrite(path, force: bool = False) -> Path:
    path = Path(path)
    if path.exists() and not force:
        raise OutputExistsError(f"{path} already exists; refusing to overwrite it (pass force=True / --force)")
    return path


@contextlib.contextmanager
def atomic_path(path, force: bool = True):
    """Yield a temporary path in the target's folder; on success it replaces ``path`` atomically.

    On any exception the temporary file is removed and ``path`` is untouched. The temporary name keeps the
    target's suffixes (``.nii.gz``) so libraries that choose a format by extension still work.
    """
    path = check_overwrite(path, force)
    path.parent.mkdir(parents=True, exist_ok=True)
    suffix = "".join(path.suffixes) or ".tmp"
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name.split('.')[0]}.", suffix=suffix, dir=path.parent)
    os.close(fd)
    try:
        yield Path(tmp)
        with contextlib.suppress(OSError):  # best effort: a vfat stick refuses chmod, the write still counts
            os.chmod(tmp, public_mode())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
