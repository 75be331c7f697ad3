#!/usr/bin/env bash
# Run the whole test suite (viewer tests run on a virtual X server through pytest-xvfb).
set -uo pipefail
cd "$(dirname "$0")/.."
. .venv/bin/activate
export PYTHONUNBUFFERED=1 MPLBACKEND=Agg
python -m pytest -ra -p no:cacheprovider "$@"
rc=$?
[ $rc -eq 5 ] && { echo "no tests collected"; exit 1; }
exit $rc
