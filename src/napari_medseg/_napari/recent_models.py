"""The recently used model packages/bundles (a small JSON file in the user's config folder)."""

from __future__ import annotations

import json
import os
from pathlib import Path

RECENT_FILE = "recent_models.json"
MAX_RECENT = 8


def config_dir() -> Path:
    env = os.environ.get("MEDSEG_CONFIG_DIR")
    if env:
        return Path(env).expanduser()
    import platformdirs

    return Path(platformdirs.user_config_dir("napari-medseg"))


def load_recent() -> list[str]:
    path = config_dir() / RECENT_FILE
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
        return [str(p) for p in data.get("recent_models", []) if isinstance(p, str)][:MAX_RECENT]
    except (OSError, ValueError, AttributeError):
        return []


def remember_model(path: str) -> list[str]:
    """Put ``path`` first in the list (written atomically; a read-only config folder is no error)."""
    from napari_medseg._atomic import atomic_path

    recent = [str(path)] + [p for p in load_recent() if p != str(path)]
    recent = recent[:MAX_RECENT]
    target = config_dir() / RECENT_FILE
    try:
        with atomic_path(target, force=True) as tmp:
            tmp.write_text(json.dumps({"recent_models": recent}, indent=1), encoding="utf-8")
    except OSError:
        pass  # a read-only config folder must not break segmentation
    return recent
