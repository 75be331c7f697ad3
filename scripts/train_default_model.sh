#!/usr/bin/env bash
# Reproduce the shipped default model (src/napari_medseg/models/default/).
# Needs ../shared/data/ct_abdomen_3mm (see docs/training.md). at most 35 min wall on 2 CPU cores shared with other work.
# Fixed seed and step count; on a loaded machine the 2100 s time budget may stop it earlier
# (the card records the steps actually run). One torch thread: on a shared 2-core machine two
# threads ran 5x slower per step than one (thread barriers under contention).
set -euo pipefail
cd "$(dirname "$0")/.."
exec nice -n 5 python -m napari_medseg.training.default_recipe --steps 2400 --time-budget 2100 --threads 1 --seed 0 "$@"
