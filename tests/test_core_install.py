"""A plain `pip install napari-medseg` (no extras) gives the API and the CLI without the GUI stack.

scripts/test.sh runs this file (and the core tests) a second time in `.venv-core`, an environment with the
package installed without extras, with MEDSEG_CORE_ENV=1: there napari, Qt and Dask must not even be installed.
"""

from __future__ import annotations

import importlib.util
import json
import os
import subprocess
import sys

import numpy as np

GUI = ("napari", "qtpy", "PyQt5", "PyQt6", "PySide2", "PySide6", "magicgui", "vispy")


def test_core_environment_has_no_gui_stack():
    installed = [m for m in (*GUI, "distributed") if importlib.util.find_spec(m) is not None]
    if os.environ.get("MEDSEG_CORE_ENV") == "1":
        assert installed == [], f"the plain install pulled in {installed}"
    else:  # the full development environment has them all
        assert {"napari", "qtpy", "distributed"} <= set(installed)


def test_medseg_predict_runs_and_loads_no_gui_module(tmp_path):
    from napari_medseg.io import write_volume
    from napari_medseg.volume import Volume

    rng = np.random.default_rng(0)
    src = write_volume(Volume((rng.normal(size=(24, 40, 36)) * 100).astype(np.int16), (2.0, 2.0, 3.0)),
                       tmp_path / "ct.nii.gz")
    code = (
        "import sys\n"
        f"sys.argv = ['medseg', 'predict', {str(src)!r}, '-o', {str(tmp_path / 'seg.nii.gz')!r}, '--device', 'cpu', '--quiet']\n"
        "from napari_medseg.cli import main\n"
        "rc = main()\n"
        f"bad = sorted(m for m in sys.modules if m.split('.')[0] in {GUI!r})\n"
        "print('RESULT', rc, bad)\n"
    )
    # the measuring CPU planner on: in the plain install (no OpenVINO / ONNX Runtime) it must plan with PyTorch
    env = {**os.environ, "MEDSEG_CALIBRATE": "1", "MEDSEG_CACHE": str(tmp_path / "cache")}
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=900, env=env)
    line = [ln for ln in proc.stdout.splitlines() if ln.startswith("RESULT")]
    assert line == ["RESULT 0 []"], proc.stdout[-2000:] + proc.stderr[-2000:]
    report = json.loads((tmp_path / "seg_report.json").read_text())
    case = report["cases"][0]
    assert case["status"] == "ok" and (tmp_path / "seg.nii.gz").is_file()
    runtimes = {row.get("runtime") for row in case["plan_info"].get("candidates", [])}
    if os.environ.get("MEDSEG_CORE_ENV") == "1":
        assert case["plan"].startswith("runtime=torch") and runtimes <= {"torch"}, case["plan_info"]
    else:
        assert {"torch", "openvino", "onnxruntime"} <= runtimes, case["plan_info"]
