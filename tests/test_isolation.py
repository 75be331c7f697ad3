"""Core modules must not import napari, Qt, magicgui or vispy (checked in a fresh interpreter)."""

from __future__ import annotations

import json
import subprocess
import sys

CORE = [
    "napari_medseg",
    "napari_medseg.volume",
    "napari_medseg.io",
    "napari_medseg.sample",
    "napari_medseg.inference",
    "napari_medseg.models",
    "napari_medseg.training",
    "napari_medseg.editing",
    "napari_medseg.editing.store",
    "napari_medseg.editing.operations",
    "napari_medseg.editing.autosave",
    "napari_medseg.editing.compare",
    "napari_medseg.editing.training_labels",
    "napari_medseg.cli",
]
GUI_PREFIXES = ("napari.", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy", "superqt", "app_model")

SCRIPT = r"""
import importlib, importlib.util, json, sys
loaded, missing = [], []
for name in CORE:
    if importlib.util.find_spec(name) is None:
        missing.append(name)
        continue
    importlib.import_module(name)
    loaded.append(name)
# touch the lazily exported public API too (it must stay GUI-free)
import napari_medseg
for attr in ("read_volume", "write_labels", "make_phantom", "segment", "load_model"):
    try:
        getattr(napari_medseg, attr)
    except (ImportError, AttributeError):
        pass
gui = sorted(m for m in sys.modules if m == "napari" or m.startswith(PREFIXES))
print(json.dumps({"loaded": loaded, "missing": missing, "gui": gui}))
"""


def test_core_imports_no_gui_modules():
    code = f"CORE = {CORE!r}\nPREFIXES = {GUI_PREFIXES!r}\n" + SCRIPT
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    report = json.loads(proc.stdout.strip().splitlines()[-1])
    assert "napari_medseg" in report["loaded"] and "napari_medseg.io" in report["loaded"]
    assert report["gui"] == [], f"core imports pulled in GUI modules: {report['gui']}"


def test_napari_reader_module_is_light():
    """Importing the reader hook (done by napari at start-up for every file) must not import torch/monai."""
    code = (
        "import sys, json\nimport napari_medseg._napari.reader\n"
        "print(json.dumps(sorted(m for m in sys.modules if m.split('.')[0] in ('torch', 'monai', 'SimpleITK'))))"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=300)
    assert proc.returncode == 0, proc.stderr
    assert json.loads(proc.stdout.strip().splitlines()[-1]) == []
