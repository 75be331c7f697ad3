"""The files at a DICOM path (a file, a folder searched recursively, or a ``.zip``), read safely.

Files are addressed by a *key*: the path as ``str``, or ``"archive.zip::member/name"`` for zip members.
What is never read, and is reported instead (``Source.skipped``, shown as warnings by the scanner):

* non-regular files in a folder (named pipes, sockets, devices): opening a FIFO blocks forever;
* broken symbolic links and files or folders the user may not read (permission denied);
* zip members whose name is absolute or has a ``..`` component (unsafe names; never extracted anyway);
* zip members that declare more than the memory budget, or decompress to more than they declare.

Zip members are streamed: a header read decompresses only the first bytes, a whole-member read checks the
declared size against `memory_budget` first and stops as soon as the stream exceeds the declared size.
"""

from __future__ import annotations

import io
import os
import stat
import threading
import time
import zipfile
from pathlib import Path

from napari_medseg.errors import InputError

ZIP_SEP = "::"


def _physical_memory() -> int:
    try:
        return int(os.sysconf("SC_PAGE_SIZE") * os.sysconf("SC_PHYS_PAGES"))
    except (ValueError, OSError, AttributeError):
        return 64 * 1024**3


#: Largest voxel array we agree to allocate for one series (bytes): a header declaring more (corrupt, or
#: beyond this machine) fails fast, before any allocation.
MAX_ARRAY_BYTES = min(64 * 1024**3, _physical_memory() // 2)


def available_memory() -> int:
    """Bytes the system can give us now (``MemAvailable``); the physical memory where that is unknown."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return _physical_memory()


_BUDGET = [0.0, 0]  # (time.monotonic() of the last look, value): /proc/meminfo is read at most once a second


def memory_budget() -> int:
    """Most bytes one series (or one decompressed zip member) may take: `MAX_ARRAY_BYTES`, and at most
    80 % of the memory available right now."""
    now = time.monotonic()
    if now - _BUDGET[0] > 1.0:
        _BUDGET[:] = [now, max(64 * 1024**2, min(MAX_ARRAY_BYTES, int(available_memory() * 0.8)))]
    return _BUDGET[1]


#: Bytes of a zip member decompressed to read its header (enhanced multi-frame headers can be large).
HEADER_LIMIT = 64 * 1024**2


class UnsafeMember(InputError):
    """A zip member that cannot be read within the memory budget (declared or actual size)."""


class BoundedFile(io.BufferedReader):
    """A file whose ``read(n)`` never asks for more than what is left: a corrupt element length of 4 GiB
    must not make Python allocate a 4 GiB buffer before finding a few bytes (what pydicom's reads would do)."""

    def __init__(self, path):
        super().__init__(io.FileIO(path, "rb"))
        self._size = os.fstat(self.fileno()).st_size

    def read(self, n=-1):
        if n is not None and n > 0:
            n = max(0, min(n, self._size - self.tell()))
            if n == 0:
                return b""
        return super().read(n)


def regular_file_problem(path: str) -> str | None:
    """Why ``path`` must not be opened ('special', 'broken link', 'denied'), or None for a readable regular file."""
    try:
        st = os.stat(path)
    except FileNotFoundError:
        return "broken link" if os.path.islink(path) else "missing"
    except PermissionError:
        return "denied"
    except OSError:
        return "unreadable"
    if not stat.S_ISREG(st.st_mode):
        return "special"
    if not os.access(path, os.R_OK):
        return "denied"
    return None


def unsafe_member_name(name: str) -> bool:
    """An absolute path, a drive letter or a ``..`` component (zip-slip names)."""
    parts = name.replace("\\", "/").split("/")
    return name.startswith(("/", "\\")) or (len(name) > 1 and name[1] == ":") or ".." in parts


def _hidden(member: str) -> bool:
    return any(part.startswith(".") or part == "__MACOSX" for part in member.split("/"))


def _read_member(zf: zipfile.ZipFile, info: zipfile.ZipInfo, size: int, where: str) -> bytes:
    """The first ``size`` bytes (everything for ``size < 0``) of a member, streamed and size-checked."""
    whole = size < 0
    if whole and info.file_size > memory_budget():
        raise UnsafeMember(
            f"{where}: the zip member declares {info.file_size / 1024**3:.2f} GiB uncompressed, more than the "
            f"{memory_budget() / 1024**3:.2f} GiB this machine can hold now (a zip bomb or a damaged archive); "
            "extract the series with a tool you trust and read the folder"
        )
    limit = info.file_size if whole else min(size, info.file_size)
    chunks, total = [], 0
    with zf.open(info) as fp:
        while total < limit:
            chunk = fp.read(min(1 << 20, limit - total))
            if not chunk:
                break
            chunks.append(chunk)
            total += len(chunk)
        if whole and fp.read(1):
            raise UnsafeMember(
                f"{where}: the zip member decompresses to more than the {info.file_size} bytes it declares; "
                "the archive is damaged or hostile — re-create it"
            )
    return b"".join(chunks)


class Source:
    """The files at a path (file, folder or zip), readable by key from several threads."""

    def __init__(self, path):
        self.path = Path(path)
        self._zip: zipfile.ZipFile | None = None
        self._members: dict[str, zipfile.ZipInfo] = {}
        self._lock = threading.Lock()
        #: reason -> keys never read: 'special', 'broken link', 'denied', 'unsafe name', 'missing', 'dir link'
        self.skipped: dict[str, list[str]] = {}
        if not self.path.exists():
            raise InputError(f"{self.path}: no such file or folder")
        if self.path.is_file() and self.path.suffix.lower() == ".zip":
            problem = regular_file_problem(str(self.path))
            if problem == "denied":
                raise InputError(f"{self.path}: permission denied; make the zip readable (chmod +r) and try again")
            try:
                self._zip = zipfile.ZipFile(self.path)
                self._members = {i.filename: i for i in self._zip.infolist()}
            except (zipfile.BadZipFile, zipfile.LargeZipFile, OSError, ValueError, EOFError) as e:
                raise InputError(
                    f"{self.path}: damaged zip archive ({e}); re-create or re-download the archive"
                ) from e

    def _skip(self, reason: str, key: str) -> None:
        self.skipped.setdefault(reason, []).append(key)

    def keys(self) -> list[str]:
        if self._zip is not None:
            out = []
            for info in self._members.values():
                if info.is_dir():
                    continue
                key = f"{self.path}{ZIP_SEP}{info.filename}"
                if unsafe_member_name(info.filename):
                    self._skip("unsafe name", key)
                elif not _hidden(info.filename):
                    out.append(key)
            return out
        if self.path.is_file():
            return [str(self.path)]
        out = []

        def denied(err: OSError):
            self._skip("denied", str(getattr(err, "filename", "") or err))

        for root, dirs, files in os.walk(self.path, onerror=denied):
            for d in dirs:
                if os.path.islink(os.path.join(root, d)):  # os.walk does not follow them: say so
                    self._skip("dir link", os.path.join(root, d))
            dirs[:] = sorted(d for d in dirs if not d.startswith("."))
            for f in sorted(files):
                if f.startswith("."):
                    continue
                key = os.path.join(root, f)
                problem = regular_file_problem(key)
                if problem is None:
                    out.append(key)
                else:
                    self._skip(problem, key)
        return out

    def _member(self, key: str) -> zipfile.ZipInfo:
        """The member of a key of this zip (the zip's own path may contain ``::``)."""
        prefix = f"{self.path}{ZIP_SEP}"
        return self._members[key[len(prefix):] if key.startswith(prefix) else key.split(ZIP_SEP, 1)[1]]

    def is_member(self, key: str) -> bool:
        return self._zip is not None and key.startswith(f"{self.path}{ZIP_SEP}")

    def size(self, key: str) -> int:
        if self.is_member(key):
            return self._member(key).file_size
        return os.path.getsize(key)

    def read_prefix(self, key: str, size: int) -> bytes:
        """The first ``size`` bytes of a file; ``size < 0`` reads everything (zip members: size-checked)."""
        if self.is_member(key):
            with self._lock:
                return _read_member(self._zip, self._member(key), size, key)
        with open(key, "rb") as f:
            return f.read() if size < 0 else f.read(size)

    def open(self, key: str, header_only: bool = False):
        """A path or a file object that ``pydicom.dcmread`` accepts.

        ``header_only`` for a zip member gives a bounded prefix (`HEADER_LIMIT`, or the whole member when
        smaller): enough for any header, never the whole of a huge member.
        """
        if self.is_member(key):
            info = self._member(key)
            if header_only and info.file_size > HEADER_LIMIT:
                return io.BytesIO(self.read_prefix(key, HEADER_LIMIT))
            return io.BytesIO(self.read_prefix(key, -1))
        return key

    def close(self):
        if self._zip is not None:
            self._zip.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_key(key: str):
    """Open a file key outside a `Source` (used by `source_datasets`); zip members are size-checked."""
    from napari_medseg._guard import split_member

    split = split_member(key) if ZIP_SEP in key else None  # a folder named "a::b" is no zip member
    if split is not None:
        archive, member = split
        with zipfile.ZipFile(archive) as zf:
            return io.BytesIO(_read_member(zf, zf.getinfo(member), -1, key))
    return key
