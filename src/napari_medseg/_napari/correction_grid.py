"""The Correction widget's grid check: labels not on the image grid are named, and reoriented (exact) or
resampled (nearest neighbour) onto it into a new layer."""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import QLabel, QPushButton, QVBoxLayout, QWidget

from napari_medseg._napari.layer_info import class_table, image_layer_for
from napari_medseg._napari.layers import volume_from_layer
from napari_medseg.errors import InputError, MedsegError


class GridCheck(QWidget):
    """``host`` is the `CorrectionWidget` (viewer, current labels layer)."""

    def __init__(self, host):
        super().__init__()
        self.host = host
        layout = QVBoxLayout(self)
        layout.setContentsMargins(0, 0, 0, 0)
        self.grid_label = QLabel("")
        self.grid_label.setWordWrap(True)
        self.resample_button = QPushButton("Resample labels onto the image grid")
        self.resample_button.clicked.connect(lambda: host.guard(self.resample_to_image, "resample"))
        self.resample_button.hide()
        layout.addWidget(self.grid_label)
        layout.addWidget(self.resample_button)

    def check(self, layer) -> str | None:
        msg = None
        if layer is not None:
            image = image_layer_for(self.host.viewer, layer)
            if np.ndim(layer.data) != 3:
                msg = f"'{layer.name}' is {np.ndim(layer.data)}D; corrections need 3D labels."
            elif image is not None:
                try:
                    ivol, _ = volume_from_layer(image)
                    lvol, _ = volume_from_layer(layer)
                    if not ivol.same_grid(lvol, tol=1e-3):
                        from napari_medseg.volume import grid_difference

                        msg = (f"'{layer.name}' holds the voxels of image '{image.name}' in another axis order "
                               f"({lvol.orientation_code()} vs {ivol.orientation_code()}); reorient it (exact, no "
                               "interpolation)." if lvol.grid_mapping(ivol) else
                               f"'{layer.name}' is not on the grid of image '{image.name}': "
                               f"{grid_difference(lvol, ivol)}; resample it first.")
                except MedsegError as e:
                    msg = str(e)
        self.grid_label.setText(msg or "")
        self.resample_button.setVisible(bool(msg) and layer is not None and np.ndim(layer.data) == 3)
        return msg

    def resample_to_image(self):
        """Add a copy of the labels resampled (nearest neighbour) onto the image grid; returns the layer."""
        from napari_medseg._napari.layers import labels_layer_data, unique_layer_name
        from napari_medseg.inference.resample import resample

        host = self.host
        layer = host.require_layer()
        image = image_layer_for(host.viewer, layer)
        if image is None:
            raise InputError("no 3D image layer to resample the labels onto")
        ivol, _ = volume_from_layer(image)
        lvol, _ = volume_from_layer(layer)
        if lvol.grid_mapping(ivol) is not None:  # same voxels in another axis order: exact transpose/flip
            arr = lvol.on_grid_of(ivol).array
        else:
            arr = resample(lvol.array, lvol, ivol, mode="nearest", padding="zeros", dtype=lvol.array.dtype)
        data, kwargs, _ = labels_layer_data(ivol.with_array(arr), unique_layer_name(host.viewer, f"{layer.name} (resampled)"),
                                            classes=class_table(layer), source=ivol)
        new = host.viewer.add_labels(data, **kwargs)
        host.set_labels_layer(new)
        return new
