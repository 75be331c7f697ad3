"""The abdominal class table shared by the sample phantom, the default model and the widgets."""

from __future__ import annotations

#: label value -> (name, RGBA colour in 0..1)
ABDOMEN_CLASSES: dict[int, tuple[str, tuple[float, float, float, float]]] = {
    1: ("liver", (0.86, 0.47, 0.35, 1.0)),
    2: ("spleen", (0.62, 0.31, 0.71, 1.0)),
    3: ("kidney_right", (0.98, 0.82, 0.24, 1.0)),
    4: ("kidney_left", (0.95, 0.65, 0.15, 1.0)),
    5: ("liver_tumour", (0.90, 0.10, 0.10, 1.0)),
    6: ("spine", (0.25, 0.60, 1.0, 1.0)),  # blue: visible on bone (off-white was not)
}


def class_names(table=ABDOMEN_CLASSES) -> dict[int, str]:
    return {0: "background", **{v: name for v, (name, _) in table.items()}}


def class_colors(table=ABDOMEN_CLASSES) -> dict[int, tuple[float, float, float, float]]:
    return {v: color for v, (_, color) in table.items()}
