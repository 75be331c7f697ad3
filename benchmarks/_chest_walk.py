"""Shared start of the fine-tune benchmarks on the real chest CT: the issue-18 walk's corrected labels.

The default model calls the lower heart "liver"; the user erases that "liver" (and "liver tumour") on axial
slices through the heart and marks them corrected. `corrected_walk` returns the image, the default model's
`LabelResult` and the erased label array; `cpu_seconds` is this process's user + system CPU time.
"""

from __future__ import annotations

import resource
import time
from pathlib import Path

DATA = Path(__file__).resolve().parents[1] / ".." / "shared" / "data"


def cpu_seconds() -> float:
    r = resource.getrusage(resource.RUSAGE_SELF)
    return r.ru_utime + r.ru_stime


def corrected_walk(folder, slices, verbose: bool = True):
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume

    vol = read_volume(Path(folder))
    t = time.perf_counter()
    start = segment(vol, model="default")
    lab = start.labels.array.copy()
    erased = 0
    for k in slices:
        m = (lab[k] == 1) | (lab[k] == 5)
        erased += int(m.sum())
        lab[k][m] = 0
    if verbose:
        print(f"chest CT {vol.spatial_shape} @ {tuple(round(s, 2) for s in vol.spacing)} mm; default model "
              f"segmented it in {time.perf_counter() - t:.1f} s; erased {erased * vol.voxel_volume_mm3 / 1000:.1f} mL "
              f"of 'liver'/'liver_tumour' on slices {list(slices)}")
    return vol, start, lab
