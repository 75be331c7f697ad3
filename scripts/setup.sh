#!/usr/bin/env bash
# One command to set up a fresh Debian machine: system packages for a virtual X server (napari tests and
# screenshots), a virtual environment in .venv, and the package with all its dependencies.
set -euo pipefail
cd "$(dirname "$0")/.."
SUDO=""; [ "$(id -u)" -ne 0 ] && SUDO="sudo"
if command -v apt-get >/dev/null 2>&1; then
  export DEBIAN_FRONTEND=noninteractive
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq --no-install-recommends \
    xvfb xauth x11-utils libxcb-icccm4 libxcb-keysyms1 libxcb-image0 libxcb-render-util0 libxcb-xinerama0 \
    libxcb-randr0 libxcb-shape0 libxcb-xfixes0 libxcb-xkb1 libxcb-cursor0 libxkbcommon-x11-0 libxkbcommon0 \
    libgl1 libegl1 libglx-mesa0 libgl1-mesa-dri libfontconfig1 libdbus-1-3 libxrender1 libxi6 \
    dcm2niix \
    plastimatch >/dev/null  # plastimatch: the independent RTSTRUCT reader the tests compare against
fi
PY=${PYTHON:-python3}
[ -d .venv ] || "$PY" -m venv .venv
. .venv/bin/activate
python -m pip install -q --upgrade pip
# The CPU build of PyTorch, pinned: an unpinned torch pulls several GB of CUDA packages.
python -m pip install -q "torch==2.13.0"
python -m pip install -q -e ".[all,testing]"
# rt-utils, the independent RTSTRUCT peer of the tests, goes to its own folder (run in a subprocess with
# PYTHONPATH=.peers): its wheel depends on the 'dataclasses' backport (shadows the stdlib, breaks napari), ships a
# top-level 'tests' package, and imports OpenCV. Its real dependencies: numpy and pydicom (from .venv), OpenCV.
python -m pip install -q --no-deps --upgrade --target .peers "rt-utils==1.2.7" opencv-python-headless
deactivate
# A second environment with the plain package (no extras: no napari, Qt or Dask), as a cluster or script user
# installs it; scripts/test.sh runs the core tests there (the API and CLI must work without the GUI stack).
[ -d .venv-core ] || "$PY" -m venv .venv-core
.venv-core/bin/python -m pip install -q --upgrade pip
.venv-core/bin/python -m pip install -q "torch==2.13.0"
.venv-core/bin/python -m pip install -q -e ".[testing-core]"
echo "setup complete: activate with '. .venv/bin/activate'"
