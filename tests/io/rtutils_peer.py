"""rt-utils as an independent RTSTRUCT peer, run in its own process with rt-utils and OpenCV from ``.peers``
(scripts/setup.sh installs them there, away from the project's environment; see the comment there).

    python rtutils_peer.py read  CT_DIR RTSTRUCT OUT.npz          -> one [k, j, i] mask per ROI name
    python rtutils_peer.py write CT_DIR MASKS.npz OUT_RTSTRUCT     -> one ROI per array in MASKS (name = key)

rt-utils' masks are [row, column, slice] in its own slice order (ascending along row x column, as ours).
"""

from __future__ import annotations

import sys

import numpy as np


def main(argv: list[str]) -> int:
    from rt_utils import RTStructBuilder

    mode, ct_dir, src, out = argv
    if mode == "read":
        rt = RTStructBuilder.create_from(dicom_series_path=ct_dir, rt_struct_path=src)
        masks = {name: np.transpose(rt.get_roi_mask_by_name(name), (2, 0, 1)) for name in rt.get_roi_names()}
        np.savez(out, **masks)
        return 0
    rt = RTStructBuilder.create_new(dicom_series_path=ct_dir)
    with np.load(src) as masks:
        for n, name in enumerate(masks.files):
            color = [[255, 0, 0], [0, 200, 0], [30, 60, 255]][n % 3]
            rt.add_roi(mask=np.transpose(masks[name], (1, 2, 0)).astype(bool), name=name, color=color)
    rt.save(out)
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
