"""ruff over the package: pyflakes/pycodestyle errors, and the banned-import rule that keeps napari, Qt, magicgui
and vispy out of core code (only src/napari_medseg/_napari/ may import them; see [tool.ruff] in pyproject.toml)."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]


def test_ruff_finds_nothing_in_the_package():
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "src"], cwd=ROOT, capture_output=True,
                          text=True)
    assert proc.returncode == 0, proc.stdout + proc.stderr


def test_banned_import_rule_catches_a_gui_import_in_core(tmp_path):
    core = ROOT / "src" / "napari_medseg" / "_lint_probe.py"
    bad = "from napari.layers import Labels\n\nprint(Labels)\n"
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename", str(core), "-"],
                          cwd=ROOT, input=bad, capture_output=True, text=True)
    assert proc.returncode == 1 and "TID251" in proc.stdout and "core code must not import napari" in proc.stdout
    widget = ROOT / "src" / "napari_medseg" / "_napari" / "_lint_probe.py"
    proc = subprocess.run([sys.executable, "-m", "ruff", "check", "--no-cache", "--stdin-filename", str(widget), "-"],
                          cwd=ROOT, input=bad, capture_output=True, text=True)
    assert proc.returncode == 0, proc.stdout
