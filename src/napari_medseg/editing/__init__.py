"""Pure numpy/scipy label-mask operations (no Qt). Each returns an `Edit` (changed region) and never
modifies its input. Array order ``[k, j, i]``; ``spacing`` in ITK ``(i, j, k)`` mm like `Volume.spacing`."""

from napari_medseg.editing.edit import Edit
from napari_medseg.editing.morphology import dilate, erode, fill_holes, keep_largest, remove_islands, smooth
from napari_medseg.editing.review import next_slice_to_check, slice_scores
from napari_medseg.editing.slices import copy_slice, interpolate_slices, relabel, signed_distance

__all__ = [
    "Edit",
    "copy_slice",
    "dilate",
    "erode",
    "fill_holes",
    "interpolate_slices",
    "keep_largest",
    "next_slice_to_check",
    "relabel",
    "remove_islands",
    "signed_distance",
    "slice_scores",
    "smooth",
]
