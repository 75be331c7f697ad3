"""Plain messages: numbers as ``1.0`` (never ``np.float64(1.0)``) and library errors summarised in one line."""

from __future__ import annotations

import re

import numpy as np


def plain(value):
    """``value`` with numpy scalars/arrays turned into Python numbers/lists (recursively in tuples/lists/dicts)."""
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, tuple):
        return tuple(plain(v) for v in value)
    if isinstance(value, list):
        return [plain(v) for v in value]
    if isinstance(value, dict):
        return {plain(k): plain(v) for k, v in value.items()}
    return value


def fmt(value, digits: int = 6) -> str:
    """A number, or a tuple/list of numbers, as short plain text: ``(0.98, 0.98, 2)``."""
    v = plain(value)
    if isinstance(v, bool) or v is None or isinstance(v, str):
        return str(v)
    if isinstance(v, float):
        return f"{v:.{digits}g}"
    if isinstance(v, (tuple, list)):
        inner = ", ".join(fmt(x, digits) for x in v)
        return f"({inner})" if isinstance(v, tuple) else f"[{inner}]"
    return str(v)


_ITK_NOISE = (
    re.compile(r"^Exception thrown in SimpleITK [^:]*:\s*"),
    re.compile(r"\S+\.(?:cxx|hxx|cpp|h|txx):\d+:?\s*"),  # source file:line
    re.compile(r"\((?:0x)?[0-9a-fA-F]{6,}\)"),  # object addresses
    re.compile(r"^(?:sitk|itk)::(?:ERROR|ExceptionObject):\s*", re.I),
    re.compile(r"^itk::ERROR:\s*"),
)


_TEEM = re.compile(r"^\[\w+\]\s*\w+:\s*")  # "[nrrd] _nrrdHeaderCheck: " (teem's call chain)


def one_line_error(e: BaseException, limit: int = 240) -> str:
    """The gist of a (multi-line) library error, SimpleITK's especially, as one short line."""
    lines = []
    for raw in str(e).splitlines():
        line = raw.strip()
        for rx in _ITK_NOISE:
            line = rx.sub("", line).strip()
        if line and line not in lines and not line.lower().startswith(("location:", "file:", "line:", "description:")):
            lines.append(line)
        elif raw.strip().lower().startswith("description:"):
            desc = raw.split(":", 1)[1].strip()
            if desc and desc not in lines:
                lines.append(desc)
    lines = [_TEEM.sub("", ln).strip() for ln in lines]
    lines = [ln for ln in lines if ln and not re.fullmatch(r"(?:trouble.*|.*: trouble)", ln)]
    if len(lines) > 2:
        lines = [lines[0], lines[-1]]  # what failed, and the innermost reason
    text = ": ".join(ln.rstrip(":") for ln in lines) or type(e).__name__
    text = re.sub(r"\s+", " ", text)
    return text if len(text) <= limit else text[: limit - 1] + "…"
