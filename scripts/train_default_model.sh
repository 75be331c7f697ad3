#!/usr/bin/env bash
# Reproduce the shipped default model (src/napari_medseg/models/default/).
# Needs ../shared/data/ct_abdomen_3mm (see docs/training.md). About 31 + 5 + 8 min wall on 2 CPU cores shared
# with other work. Fixed seeds and step counts; on a loaded machine the time budgets may stop a stage
# earlier (the card records the steps actually run). One torch thread: on a shared 2-core machine two
# threads ran 5x slower per step than one (thread barriers under contention).
#   stage 1: phantoms + real CT, 2400 steps from scratch
#   stage 2: + synthetic thorax negatives (heart, lungs, chest wall labelled background), 700 steps at lr 1e-3
#   stage 3: + thoracoabdominal phantoms (liver and spleen ending in diaphragm domes under lungs and heart),
#            thorax negatives with lateral chest-wall muscles, the real CT 5x, anti-aliased downsampling,
#            1200 steps at lr 1e-3
set -euo pipefail
cd "$(dirname "$0")/.."
work="$(mktemp -d)"
nice -n 5 python research/default_recipe.py --steps 2400 --time-budget 2100 --threads 1 --seed 0 -o "$work/stage1"
nice -n 5 python research/default_recipe.py --init "$work/stage1" --thorax 4 --lr 1e-3 \
    --steps 700 --time-budget 540 --threads 1 --seed 1 -o "$work/stage2"
exec nice -n 5 python research/default_recipe.py --init "$work/stage2" --thorax 4 --lateral-muscles \
    --thoracoabdominal 6 --composite-heart column --real-weight 5 --antialias --lr 1e-3 \
    --steps 1200 --time-budget 900 --threads 1 --seed 2 "$@"
