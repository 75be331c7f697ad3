"""Lazy public names of a package (PEP 562): imported from their module on first access, so that
``import napari_medseg`` stays fast and never pulls torch, MONAI or SimpleITK in by itself."""

from __future__ import annotations

import importlib
from typing import Callable


def lazy_getattr(package: str, table: dict[str, str]) -> Callable[[str], object]:
    """A module ``__getattr__`` for ``package`` resolving ``table`` (public name -> defining module)."""

    def __getattr__(name: str):
        if name in table:
            return getattr(importlib.import_module(table[name]), name)
        raise AttributeError(f"module {package!r} has no attribute {name!r}")

    return __getattr__
