"""Core inference modules and the predict CLI never import napari or Qt."""

from __future__ import annotations

import subprocess
import sys


def test_inference_imports_no_gui():
    code = (
        "import sys\n"
        "import napari_medseg as ms\n"
        "from napari_medseg.inference import segment, LabelResult\n"
        "import napari_medseg.inference.pipeline, napari_medseg.models.bundle, napari_medseg.commands.model_commands\n"
        "assert ms.segment is segment and ms.load_model is not None\n"
        "bad = sorted(m for m in sys.modules if m == 'napari' or m.startswith(('napari.', 'qtpy', 'PyQt', 'magicgui')))\n"
        "print(bad)\n"
        "assert not bad, bad\n"
    )
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True)
    assert proc.returncode == 0, proc.stderr

