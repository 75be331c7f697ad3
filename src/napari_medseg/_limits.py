"""One guard for declared sizes: nothing is allocated because a header says so.

Every reader calls :func:`check_allocation` with the number of bytes a header (or model card) asks for,
*before* allocating them. The request is refused with a `ResourceLimitError` (an `InputError`) naming the
file when it exceeds the memory this process may use (a fraction of the memory available now, or the
``MEDSEG_MAX_ALLOC`` environment variable in bytes / with a K/M/G suffix), or when a compressed file would
have to expand by more than deflate can (~1032:1) to hold it (see :func:`check_expansion`).
"""

from __future__ import annotations

import os
from pathlib import Path

from napari_medseg.errors import ResourceLimitError

#: deflate cannot compress better than ~1032:1; bzip2 reaches more on constant data but real images do not.
MAX_DEFLATE_RATIO = 1100
#: fraction of the currently available memory one allocation may claim (leaves room for the copies that
#: preprocessing makes and for the rest of the system).
AVAILABLE_FRACTION = 0.8
_UNITS = {"": 1, "K": 1 << 10, "M": 1 << 20, "G": 1 << 30, "T": 1 << 40}


def _parse_bytes(text: str) -> int | None:
    t = text.strip().upper().removesuffix("B").removesuffix("I")
    unit = t[-1:] if t[-1:] in _UNITS and t[-1:] else ""
    try:
        value = float(t[: len(t) - len(unit)] if unit else t)
    except ValueError:
        return None
    return int(value * _UNITS[unit]) if value > 0 else None


def available_memory() -> int:
    """Bytes of memory available to this process now (psutil, else /proc/meminfo; 4 GiB if unknown)."""
    try:
        import psutil

        return int(psutil.virtual_memory().available)
    except Exception:  # noqa: BLE001 - psutil missing or unsupported platform
        pass
    try:
        with open("/proc/meminfo", encoding="ascii") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    return 4 << 30


def allocation_limit() -> int:
    """The most bytes one declared allocation may take (``MEDSEG_MAX_ALLOC`` or 80 % of available memory)."""
    env = os.environ.get("MEDSEG_MAX_ALLOC")
    if env:
        parsed = _parse_bytes(env)
        if parsed:
            return parsed
    return int(available_memory() * AVAILABLE_FRACTION)


def human_bytes(n: int | float) -> str:
    """``17.2 GB``, ``3.4 MB``, ``672 bytes``."""
    n = float(n)
    for unit, size in (("TB", 1e12), ("GB", 1e9), ("MB", 1e6), ("kB", 1e3)):
        if n >= size:
            return f"{n / size:.3g} {unit}"
    return f"{int(n)} bytes"


_gb = human_bytes


def check_allocation(nbytes, what: str, path=None) -> int:
    """Refuse (``ResourceLimitError``) to allocate ``nbytes`` for ``what`` (read from ``path``) beyond the limit.

    ``nbytes`` may be any integer-like value (Python int: no overflow for absurd headers). Returns it as int.
    """
    n = int(nbytes)
    where = f"{path}: " if path is not None else ""
    if n < 0:
        raise ResourceLimitError(f"{where}{what} declares a negative size ({n} bytes); the header is corrupt")
    limit = allocation_limit()
    if n > limit:
        raise ResourceLimitError(
            f"{where}{what} needs {_gb(n)} of memory, more than the {_gb(limit)} available to napari-medseg; "
            "the header is corrupt or hostile, or the image is too large for this machine (crop or downsample it "
            "with another tool, or raise MEDSEG_MAX_ALLOC)"
        )
    return n


def check_expansion(nbytes, compressed_bytes, what: str, path=None, ratio: float = MAX_DEFLATE_RATIO) -> int:
    """Refuse ``nbytes`` of decompressed data claimed by ``compressed_bytes`` of input beyond ``ratio``:1."""
    n, c = int(nbytes), max(int(compressed_bytes), 0)
    if n > c * ratio:
        where = f"{path}: " if path is not None else ""
        raise ResourceLimitError(
            f"{where}{what} declares {_gb(n)} of data, more than {_gb(c)} of compressed input can hold "
            f"(at most {ratio:g}:1); the file is truncated or its header is corrupt. Re-export or re-download it"
        )
    return n


def file_size(path) -> int:
    """Size in bytes of ``path`` (0 when it cannot be stat'ed)."""
    try:
        return Path(path).stat().st_size
    except OSError:
        return 0
