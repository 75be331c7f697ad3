"""Rewrite the integrity record (integrity.json) of a model package folder after a deliberate card edit.

    python scripts/reseal_model.py src/napari_medseg/models/default

Use only for a card you changed on purpose (e.g. the shipped default's provenance); the weights' SHA-256 in
the card must still match the weights.
"""

import json
import sys
from pathlib import Path

from napari_medseg.models.package import INTEGRITY_NAME, _read_package, integrity_record, sha256_bytes

for arg in sys.argv[1:] or ["src/napari_medseg/models/default"]:
    folder = Path(arg)
    text, src, blob, wsrc = _read_package(folder)
    card = json.loads(text)
    if card.get("weights_sha256") and card["weights_sha256"].lower() != sha256_bytes(blob):
        sys.exit(f"{wsrc}: the weights do not match the card's weights_sha256; not resealing")
    (folder / INTEGRITY_NAME).write_text(integrity_record(text, card["weights_file"], blob), encoding="utf-8")
    print(f"resealed {folder / INTEGRITY_NAME}")
