"""`LabelResult`: the labels `Volume` on the source grid plus class table, statistics, timings, warnings."""

from __future__ import annotations

import csv
import io
from dataclasses import dataclass, field
from typing import Any

import numpy as np

from napari_medseg.volume import Volume

STAT_COLUMNS = ("value", "name", "voxels", "volume_ml", "mean_intensity", "std_intensity")


def class_stats(labels: np.ndarray, image: np.ndarray | None, classes: dict[int, str], voxel_mm3: float,
                slab_voxels: int = 1 << 22) -> dict[int, dict]:
    """Per foreground class: voxel count, volume in mL, mean/std of ``image`` inside it.

    Every named class gets a row (0 voxels when absent), and so does every value present that ``classes``
    does not name (as ``"label N"``). Slabs of slices bound the temporaries and keep each ``np.bincount``
    (which holds the GIL) short, so a worker thread never freezes a GUI thread; only foreground voxels are
    tabulated.
    """
    labels = np.asarray(labels)
    top = max(int(labels.max(initial=0)), max(classes, default=0)) + 1
    counts = np.zeros(top, dtype=np.int64)
    s1 = np.zeros(top, dtype=np.float64)
    s2 = np.zeros(top, dtype=np.float64)
    step = max(1, slab_voxels // max(1, int(np.prod(labels.shape[1:]))))
    for k0 in range(0, labels.shape[0] if labels.ndim else 0, step):
        lab = labels[k0:k0 + step].ravel()
        fg = lab != 0
        flat = lab[fg].astype(np.intp, copy=False)
        counts += np.bincount(flat, minlength=top)
        if image is not None:
            img = np.asarray(image[k0:k0 + step]).ravel()[fg].astype(np.float64)
            s1 += np.bincount(flat, weights=img, minlength=top)
            s2 += np.bincount(flat, weights=img * img, minlength=top)
    stats = {}
    for v in range(1, top):
        if v not in classes and not counts[v]:
            continue
        c = int(counts[v])
        row = {"value": int(v), "name": classes.get(v, f"label {v}"), "voxels": c, "volume_ml": c * voxel_mm3 / 1000.0,
               "mean_intensity": float("nan"), "std_intensity": float("nan")}
        if image is not None and c:
            mean = s1[v] / c
            row["mean_intensity"] = float(mean)
            row["std_intensity"] = float(np.sqrt(max(s2[v] / c - mean * mean, 0.0)))
        stats[int(v)] = row
    return stats


def stats_csv(rows: list[dict], columns=STAT_COLUMNS) -> str:
    """The statistics rows as CSV text (floats with 4 decimals): the one writer behind ``medseg predict
    --stats``, `LabelResult.to_csv` and the Segment widget's export."""
    buf = io.StringIO()
    w = csv.DictWriter(buf, fieldnames=columns, lineterminator="\n")
    w.writeheader()
    for row in rows:
        w.writerow({k: (f"{row[k]:.4f}" if isinstance(row[k], float) else row[k]) for k in columns})
    return buf.getvalue()


@dataclass
class LabelResult:
    labels: Volume  # uint8/uint16 on the source grid; meta["classes"] = {value: name}
    classes: dict[int, str]
    colors: dict[int, tuple] = field(default_factory=dict)
    stats: dict[int, dict] = field(default_factory=dict)
    probabilities: Volume | None = None  # [C, k, j, i] float32 on the source grid (return_probabilities=True)
    uncertainty: Volume | None = None  # [k, j, i] float32: 1 - max probability (source grid; model grid when
    # the config asks uncertainty="model": then its own exact geometry, see inference/uncertainty.py)
    timings: dict[str, float] = field(default_factory=dict)  # seconds per stage
    warnings: list[str] = field(default_factory=list)
    model: dict[str, Any] = field(default_factory=dict)  # name, version, path, architecture
    plan: str = ""  # runtime / device / batch / precision actually used (and the measured ms per window)
    plan_info: dict[str, Any] = field(default_factory=dict)  # the CPU planner's candidate table, timings, cache
    config: Any = None  # the `InferenceConfig` the run used

    def stats_table(self) -> list[dict]:
        """One row per foreground class (columns `STAT_COLUMNS`)."""
        return [dict(self.stats[v]) for v in sorted(self.stats)]

    def stats_csv(self) -> str:
        return stats_csv(self.stats_table())

    def to_csv(self, path, force: bool = True):
        """Write the statistics table as CSV (atomically)."""
        from napari_medseg._atomic import atomic_path
        from napari_medseg._guard import check_outputs

        check_outputs(path, [self.labels])
        with atomic_path(path, force=force) as tmp:
            tmp.write_text(self.stats_csv(), encoding="utf-8")
        return path

    def __repr__(self) -> str:
        present = {v: s["voxels"] for v, s in self.stats.items() if s["voxels"]}
        return (f"LabelResult(labels={self.labels!r}, classes={len(self.classes) - 1}, present={present}, "
                f"seconds={sum(self.timings.values()):.1f})")
