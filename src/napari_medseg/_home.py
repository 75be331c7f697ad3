"""The napari-medseg data folder, shared by the model registry, caches and correction sessions."""

from __future__ import annotations

import os
from pathlib import Path

#: environment variable overriding the data folder
HOME_ENV = "MEDSEG_HOME"


def data_dir() -> Path:
    """``$MEDSEG_HOME`` or the per-user data directory of napari-medseg (``platformdirs.user_data_dir``)."""
    env = os.environ.get(HOME_ENV)
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_data_dir("napari-medseg"))
