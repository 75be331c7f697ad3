#!/usr/bin/env bash
# Run the whole test suite (viewer tests run on a virtual X server through pytest-xvfb).
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python -m pytest -ra -p no:cacheprovider "$@"
rc=$?
[ $rc -eq 5 ] && { echo "no tests collected"; exit 1; }
if [ $# -eq 0 ] && [ -x .venv-core/bin/python ]; then
  # the plain `pip install napari-medseg` (no napari, Qt or Dask): API, CLI and core tests
  echo "== core environment (.venv-core: napari-medseg without extras)"
  MEDSEG_CORE_ENV=1 .venv-core/bin/python -m pytest -ra -p no:cacheprovider -q \
    tests/test_core_install.py tests/test_isolation.py tests/test_cli_predict.py tests/inference \
    --ignore=tests/inference/test_export.py --deselect tests/inference/test_cpu_plan.py \
    --ignore=tests/inference/test_fast_plan.py || rc=1
fi
exit $rc
