"""Atomic file writes: write to a temporary file beside the target, then ``os.replace``."""

from __future__ import annotations

import contextlib
import os
import tempfile
from pathlib import Path

from napari_medseg.errors import OutputExistsError


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
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
