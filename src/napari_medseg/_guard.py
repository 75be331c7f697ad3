"""Outputs never land on or inside inputs; output folders are checked for writability before long work.

One rule for every command, writer and API function: no output path may be, or lie inside, an input file or
input folder, with or without ``force``. Paths are compared after resolving symlinks and ``./``/``..``
spellings, and by inode (``st_dev``, ``st_ino``) so a hard link or a bind mount of an input is caught too.
Outputs that replace a whole folder (model packages, DICOM series) must also not *contain* an input.

:func:`input_paths` collects the paths to protect from whatever the caller has: paths, `Volume`\\ s (their
``meta["source_path"]``: the file, DICOM folder or zip they were read from; else ``meta["dicom_files"]``), layer records
(``{"meta": {...}}``) or model packages. Zip members (``archive.zip::member``) protect the archive.
"""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

from napari_medseg.errors import OutputNotWritableError, OutputOverInputError

ZIP_SEP = "::"


def split_member(text: str) -> tuple[str, str] | None:
    """``"archive.zip::member"`` -> ``("archive.zip", "member")`` when that archive is an existing file; else None.

    A folder whose name contains ``::`` is a plain path, not a zip member (the first ``::`` after which the
    prefix is a file wins).
    """
    start = 0
    while True:
        at = text.find(ZIP_SEP, start)
        if at < 0:
            return None
        if os.path.isfile(text[:at]):
            return text[:at], text[at + len(ZIP_SEP):]
        start = at + 1


def _strip_member(text: str) -> str:
    """``archive.zip::member`` -> ``archive.zip`` (only when that archive exists); other paths unchanged."""
    split = split_member(text)
    return split[0] if split else text


def input_paths(*items) -> list[Path]:
    """The input paths named by ``items`` (paths, Volumes, layer records, lists of those; None is skipped)."""
    out: list[Path] = []

    def add(obj) -> None:
        if obj is None:
            return
        if isinstance(obj, (str, os.PathLike)):
            if os.fspath(obj):
                out.append(Path(_strip_member(os.fspath(obj))))
            return
        if isinstance(obj, (list, tuple, set)):
            for o in obj:
                add(o)
            return
        meta = getattr(obj, "meta", None)
        if meta is None and isinstance(obj, dict):
            meta = obj.get("meta") if isinstance(obj.get("meta"), dict) else obj
        if isinstance(meta, dict):
            if meta.get("source_path"):  # the file, folder or zip the volume was read from
                add(str(meta["source_path"]))
            else:  # the DICOM files themselves (zip members protect their archive)
                add(sorted({_strip_member(str(f)) for f in meta.get("dicom_files") or []}))
            return
        path = getattr(obj, "path", None)  # LoadedModel and the like
        if isinstance(path, (str, os.PathLike)):
            add(path)

    for item in items:
        add(item)
    seen, unique = set(), []
    for p in out:
        key = os.path.abspath(p)
        if key not in seen:
            seen.add(key)
            unique.append(p)
    return unique


def _ids(path: Path) -> tuple[int, int] | None:
    try:
        st = os.stat(path)
    except OSError:
        return None
    return st.st_dev, st.st_ino


def _chain(path: Path):
    """``path`` and its ancestors (resolved), the existing ones first-to-root."""
    real = Path(os.path.realpath(path))
    yield real
    yield from real.parents


def _overlap(output: Path, inp: Path, contains: bool) -> str | None:
    """How ``output`` collides with ``inp`` ("is", "lies inside", "contains"), or None."""
    ri = Path(os.path.realpath(inp))
    ro = Path(os.path.realpath(output))
    if ro == ri:
        return "is"
    if ri in ro.parents:
        return "lies inside"
    in_ids = _ids(ri)
    if in_ids is not None:
        for n, anc in enumerate(_chain(output)):
            if os.path.lexists(anc) and _ids(anc) == in_ids:
                return "is" if n == 0 else "lies inside"
    if contains and ro in ri.parents:
        return "contains"
    return None


def check_outputs(outputs, inputs, *, replaces_folder: bool = False, what: str = "output") -> None:
    """Raise `OutputOverInputError` when an output is, lies inside (or, for ``replaces_folder``, contains) an input.

    ``outputs``: a path or a list of paths (None entries skipped). ``inputs``: anything :func:`input_paths`
    accepts. Nothing is written or created.
    """
    outs = [Path(o) for o in (outputs if isinstance(outputs, (list, tuple)) else [outputs]) if o is not None]
    ins = input_paths(inputs)
    for o in outs:
        for i in ins:
            how = _overlap(o, i, replaces_folder)
            if how is None:
                continue
            kind = "folder" if os.path.isdir(i) else "file"
            if how == "contains":
                detail = f"the {what} folder {o} contains the input {kind} {i} and would replace it"
            else:
                detail = f"the {what} {o} {how} the input {kind} {i}"
            raise OutputOverInputError(
                f"refusing to write: {detail}; napari-medseg never overwrites its inputs or writes into an input folder "
                f"(not even with --force / force=True). Choose an output outside {i}"
            )


def check_writable(path, what: str = "output") -> Path:
    """Raise `OutputNotWritableError` unless a file can be created where ``path`` will be written.

    ``path`` is the output file (or folder) to be created; the nearest existing folder above it must accept a
    new file (tested by creating and removing one: ``os.access`` is wrong for root and read-only mounts).
    """
    path = Path(path)
    folder = path if path.is_dir() else path.parent
    while not folder.exists():
        if folder.parent == folder:
            break
        folder = folder.parent
    if folder.exists() and not folder.is_dir():
        raise OutputNotWritableError(
            f"cannot write {what} {path}: {folder} is a file, not a folder; choose another output location"
        )
    try:
        fd, tmp = tempfile.mkstemp(prefix=".medseg-write-test.", dir=folder)
        os.close(fd)
        os.unlink(tmp)
    except OSError as e:
        raise OutputNotWritableError(
            f"cannot write {what} {path}: the folder {folder} is not writable ({e.strerror or e}); "
            "choose another output location or fix its permissions"
        ) from e
    return path


def check_output_paths(outputs, inputs, *, replaces_folder: bool = False, what: str = "output") -> None:
    """:func:`check_outputs` then :func:`check_writable` for each output: the checks before any long work."""
    check_outputs(outputs, inputs, replaces_folder=replaces_folder, what=what)
    for o in outputs if isinstance(outputs, (list, tuple)) else [outputs]:
        if o is not None:
            check_writable(o, what)
