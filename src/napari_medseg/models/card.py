"""The model card: everything needed to run (and trace) a model, stored as JSON beside its weights.

Array conventions for networks: a model sees tensors ``[N, C, i, j, k]`` in the MONAI/NIfTI axis order
(the transpose of `Volume.array`'s ``[k, j, i]``), after reorientation to ``preprocessing.orientation``
(MONAI/nibabel axis codes, e.g. ``"RAS"``). ``roi_size`` and ``preprocessing.spacing`` are in that
``(i, j, k)`` order, in millimetres. This is what MONAI Model Zoo bundles expect, so our own packages and
bundles share one pipeline.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from typing import Any

from napari_medseg.classes import ClassInfo, ClassTable
from napari_medseg.errors import ModelError

CARD_FORMAT = "napari-medseg-model/1"


@dataclass
class ModelCard:
    name: str
    architecture: str = "UNet"  # a class name in monai.networks.nets
    arch_args: dict[str, Any] = field(default_factory=dict)  # literal keyword arguments
    in_channels: int = 1
    classes: list[ClassInfo] = field(default_factory=list)  # foreground classes; 0 is background
    # preprocessing
    orientation: str | None = "RAS"  # None: keep the image's own axis order
    spacing: tuple[float, float, float] | None = (1.5, 1.5, 2.0)  # (i, j, k) mm; None: native
    intensity: dict[str, Any] = field(
        default_factory=lambda: {"type": "ct_window", "a_min": -175.0, "a_max": 250.0, "b_min": 0.0, "b_max": 1.0, "clip": True}
    )  # or {"type": "zscore", "nonzero": False}
    crop_foreground: bool = False
    #: Gaussian anti-aliasing before downsampling to ``spacing`` (sigma = (factor - 1) / 2 source voxels per
    #: axis, as scikit-image's ``rescale``): averages noise away instead of sampling it, so a noisy low-dose
    #: 1 mm CT looks at 3 mm like the training data did. Off for MONAI bundles (their ``Spacingd`` does not).
    antialias: bool = False
    # sliding window
    roi_size: tuple[int, int, int] = (96, 96, 96)
    overlap: float = 0.25
    sw_batch_size: int = 4
    blend_mode: str = "gaussian"
    #: how images smaller than the ROI are padded for the sliding window: "replicate" (edge values, as training
    #: pads small cases) or "constant" (zeros, MONAI's sliding_window_inference; used for MONAI bundles)
    pad_mode: str = "replicate"
    # postprocessing
    keep_largest: list[int] = field(default_factory=list)  # class values kept as their largest component
    #: {class value: container value}: components of the class mostly outside the container are dropped
    #: (e.g. {5: 1}, a liver tumour lies in the liver); JSON keys are strings
    contained_in: dict[int, int] = field(default_factory=dict)
    fill_holes: bool = False
    #: "softmax" (one class per voxel, argmax) or "sigmoid" (overlapping regions, MONAI bundles such as BraTS:
    #: each channel thresholded at ``threshold``, then ``label_rules`` [[channel, value], ...] give the label,
    #: the first matching rule winning; 0 where none matches)
    activation: str = "softmax"
    threshold: float = 0.5
    label_rules: list[list[int]] = field(default_factory=list)
    #: True when the bundle takes the argmax on its own grid and resamples the labels (nearest) to the image
    #: (``AsDiscreted`` before ``Invertd``); False: probabilities are resampled linearly, then the argmax taken
    invert_labels: bool = False
    #: names of the input channels in the order the network expects them (e.g. ["T1c", "T1", "T2", "FLAIR"])
    channel_names: list[str] = field(default_factory=list)
    # provenance
    version: str = "1"
    description: str = ""
    provenance: dict[str, Any] = field(default_factory=dict)  # data, date, parent, metrics, command, ...
    weights_file: str = "model.safetensors"
    weights_sha256: str = ""
    package_version: str = ""
    format: str = CARD_FORMAT

    @property
    def out_channels(self) -> int:
        if self.activation == "sigmoid":
            return 1 + max((int(c) for c, _ in self.label_rules), default=len(self.classes) - 1)
        return 1 + len(self.classes) if not self.classes or min(c.value for c in self.classes) > 0 else len(self.classes)

    @property
    def class_table(self) -> ClassTable:
        """The card's classes as a `ClassTable` (value -> name, colour)."""
        return ClassTable(tuple(self.classes))

    def class_names(self) -> dict[int, str]:
        """``{value: name}`` with ``0: "background"`` (label values are the keys, as `classes.class_names`; a
        class of value 0 names the background). For channel index -> name see `ClassTable.by_channel`."""
        return {0: "background", **{int(c.value): c.name for c in self.classes}}

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2, sort_keys=False)

    @classmethod
    def from_dict(cls, d: dict[str, Any], source: str = "") -> "ModelCard":
        where = f" in {source}" if source else ""
        if not isinstance(d, dict):
            raise ModelError(f"model card{where} is not a JSON object")
        known = set(cls.__dataclass_fields__)
        unknown = set(d) - known
        if unknown:
            raise ModelError(f"model card{where} has unknown keys {sorted(unknown)}; is it from a newer napari-medseg?")
        d = dict(d)
        try:
            d["classes"] = [c if isinstance(c, ClassInfo) else ClassInfo(**c) for c in d.get("classes", [])]
            if d.get("contained_in"):
                if not isinstance(d["contained_in"], dict):
                    raise TypeError(f"contained_in must map class values to class values, got {d['contained_in']!r}")
                d["contained_in"] = {int(k): int(v) for k, v in d["contained_in"].items()}
            for key in ("spacing", "roi_size"):
                if d.get(key) is not None:
                    d[key] = tuple(d[key])
            return cls(**d)
        except (TypeError, ValueError) as e:
            raise ModelError(f"model card{where} is malformed: {e}") from e

    @classmethod
    def from_json(cls, text: str, source: str = "") -> "ModelCard":
        try:
            return cls.from_dict(json.loads(text), source)
        except json.JSONDecodeError as e:
            raise ModelError(f"model card {source or ''} is not valid JSON: {e}") from e
