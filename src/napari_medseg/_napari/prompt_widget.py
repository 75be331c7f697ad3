"""Prompt widget: click (or box) a structure, see the 3D mask as a live preview, accept it as one undoable edit.

* Target: the selected class (``selected_label``) of the chosen labels layer. "New object" writes the mask
  as that class; "Refine class" starts from the class's current mask, and clicks on its errors fix it in 3D.
* Clicks go into a Points layer ("prompt clicks"): positive by default, negative while "Negative" is on
  (key **N** toggles it, on the points layer). A rectangle on the "prompt box" Shapes layer is a box prompt.
* Each change of the clicks or the box runs `napari_medseg.prompt.prompt_segment` in a worker
  (`ProgressPanel`); a change during a run is coalesced into one rerun. The GUI thread only reads the layers
  and writes the preview.
* **Enter** (or Accept) writes the preview into the labels with one ``Labels.data_setitem`` call: one step of
  napari's undo history, whose ``paint`` event the corrected-slice tracking records; the touched slices are
  recorded as edited (and the current slice as reviewed, if ticked) in the layer metadata. **Escape**
  (or Discard) drops the preview and the clicks.
"""

from __future__ import annotations

import numpy as np
from qtpy.QtWidgets import (
    QCheckBox,
    QComboBox,
    QFormLayout,
    QHBoxLayout,
    QLabel,
    QPushButton,
    QVBoxLayout,
    QWidget,
)

from napari_medseg._napari.layers import volume_from_layer
from napari_medseg.errors import InputError, MedsegError
from napari_medseg.progress import Progress

POINTS_NAME, BOX_NAME, PREVIEW_NAME = "prompt clicks", "prompt box", "prompt preview"
COLORS = {"positive": "#30e030", "negative": "#ff3030"}


def _kinds(points) -> list[str]:
    feats = getattr(points, "features", None)
    if feats is None or "kind" not in feats or len(feats) != len(points.data):
        return ["positive"] * len(points.data)
    return [str(k) for k in feats["kind"]]


def record_prompt_edit(layer, axis: int, reviewed: int | None) -> None:
    """Record a prompt edit in the layer's `CorrectionStore`. The ``data_setitem`` write already reached it as an
    edit of the touched slices (its paint event); the slice on screen (``reviewed``) is marked corrected."""
    from napari_medseg._napari.tracking import store_for

    if reviewed is not None:
        store_for(layer).mark(int(axis), int(reviewed), True)


class PromptWidget(QWidget):
    def __init__(self, napari_viewer, model=None):
        super().__init__()
        self.viewer = napari_viewer
        self.model = model
        self._progress = None
        self._pending = False
        self._base = None  # refine mode: the class mask the session started from
        self._result = None  # last prompt result (Volume)
        self._volume = None
        self._boxes = []  # source boxes of the session's results: where labels can change
        self._layers = {}  # the prompt layers (kept, emptied and hidden between sessions: see `_park_layers`)
        self._active = False  # a session is running (clicks on the points layer run the model)
        self.last_seconds = None
        self.runs = 0  # results received (tests and benchmarks wait on it)
        self.accepted = 0  # results written into the labels
        self.accepting = False  # a background Accept is finding the voxels that change
        from napari_medseg._napari.tracking import ensure_correction_stores

        ensure_correction_stores(self.viewer)  # every labels layer tracks its edits from now on
        from napari_medseg._napari.warm_up import warm_up_prompt

        self.warm_up = warm_up_prompt(model)  # imports, model read, first-call kernels: not on the first click
        self._build()
        self.viewer.layers.events.inserted.connect(self._refresh_layers)
        self.viewer.layers.events.removed.connect(self._refresh_layers)
        self._refresh_layers()

    # ------------------------------------------------------------------ UI
    def _build(self):
        self.image_combo, self.labels_combo = QComboBox(), QComboBox()
        self.mode_combo = QComboBox()
        self.mode_combo.addItems(["New object", "Refine selected class"])
        self.target_label = QLabel("")
        self.negative = QPushButton("Negative clicks (N)")
        self.negative.setCheckable(True)
        self.negative.toggled.connect(self._on_kind)
        self.overwrite = QCheckBox("Overwrite other classes")
        self.mark_reviewed = QCheckBox("Mark the current slice reviewed on Accept")
        self.mark_reviewed.setChecked(True)
        self.start_button = QPushButton("Start clicking")
        self.start_button.clicked.connect(lambda: self._guard(self.start, "Start"))
        self.box_button = QPushButton("Draw box")
        self.box_button.clicked.connect(lambda: self._guard(self.draw_box, "Box"))
        self.accept_button = QPushButton("Accept (Enter)")
        self.accept_button.clicked.connect(lambda: self._guard(lambda: self.accept(background=True), "Accept"))
        self.discard_button = QPushButton("Discard (Esc)")
        self.discard_button.clicked.connect(lambda: self._guard(self.discard, "Discard"))
        self.status = QLabel("Choose the image and labels, select a class, then Start clicking.")
        self.status.setWordWrap(True)
        form = QFormLayout()
        form.addRow("Image", self.image_combo)
        form.addRow("Labels", self.labels_combo)
        form.addRow("Mode", self.mode_combo)
        form.addRow("Target", self.target_label)
        row1, row2 = QHBoxLayout(), QHBoxLayout()
        for b in (self.start_button, self.box_button, self.negative):
            row1.addWidget(b)
        for b in (self.accept_button, self.discard_button):
            row2.addWidget(b)
        self._layout = QVBoxLayout(self)
        self._layout.addLayout(form)
        for w in (row1, row2):
            self._layout.addLayout(w)
        self._layout.addWidget(self.overwrite)
        self._layout.addWidget(self.mark_reviewed)
        self._layout.addWidget(self.status)
        self._layout.addStretch(1)
        self.labels_combo.currentIndexChanged.connect(lambda *_: self._show_target())

    def _guard(self, fn, what):
        try:
            return fn()
        except MedsegError as e:
            self.status.setText(f"{what}: {e}")
            from napari.utils.notifications import show_error

            show_error(f"{what}: {e}")
        return None

    def _refresh_layers(self, event=None):
        for combo, kind in ((self.image_combo, "Image"), (self.labels_combo, "Labels")):
            current = combo.currentText()
            combo.blockSignals(True)
            combo.clear()
            names = [l.name for l in self.viewer.layers if l.__class__.__name__ == kind and l.name != PREVIEW_NAME]
            combo.addItems(names)
            if current in names:
                combo.setCurrentText(current)
            combo.blockSignals(False)
        self._show_target()

    def _layer(self, combo):
        name = combo.currentText()
        return self.viewer.layers[name] if name in self.viewer.layers else None

    def image_layer(self):
        return self._layer(self.image_combo)

    def labels_layer(self):
        return self._layer(self.labels_combo)

    def _show_target(self):
        lab = self.labels_layer()
        if lab is None:
            self.target_label.setText("(no labels layer)")
            return
        value = int(lab.selected_label)
        names = (lab.metadata or {}).get("medseg_classes") or {}
        name = names.get(value, names.get(str(value), "")) if isinstance(names, dict) else ""
        self.target_label.setText(f"class {value} {name}".strip() + f" of '{lab.name}'")

    # ------------------------------------------------------------------ session
    @property
    def refine(self) -> bool:
        return self.mode_combo.currentIndex() == 1

    def start(self):
        """Create the clicks / box layers on the image's grid and select the clicks layer in add mode."""
        if self.accepting:
            raise InputError("the last result is still being accepted; start again in a moment")
        image, labels = self.image_layer(), self.labels_layer()
        if image is None or labels is None:
            raise InputError("open an image and a labels layer on it first (Segment, or File > New Labels)")
        if np.shape(labels.data) != np.shape(image.data):
            raise InputError(f"labels '{labels.name}' {np.shape(labels.data)} and image '{image.name}' "
                             f"{np.shape(image.data)} differ in shape")
        self._volume, _ = volume_from_layer(image)
        value = int(labels.selected_label)
        if value == 0:
            raise InputError("select the class to segment in the labels layer (not 0, the background)")
        self._base = (np.asarray(labels.data) == value) if self.refine else None
        if self.refine and not self._base.any():
            raise InputError(f"class {value} is empty: use 'New object' to segment it")
        self._park_layers()
        self._result, self._pending, self._boxes = None, False, []
        pts = self._reusable("points", image)
        if pts is None:
            geo = {"scale": image.scale, "translate": image.translate, "affine": image.affine.affine_matrix}
            pts = self.viewer.add_points(np.empty((0, 3)), ndim=3, name=POINTS_NAME, size=6,
                                         face_color=COLORS["positive"], features={"kind": np.array([], dtype=object)},
                                         **geo)
            pts.events.data.connect(self._on_prompts)
            pts.bind_key("n", lambda layer: self.negative.toggle(), overwrite=True)
            pts.bind_key("Enter", lambda layer: self._guard(lambda: self.accept(background=True), "Accept"),
                         overwrite=True)
            pts.bind_key("Escape", lambda layer: self._guard(self.discard, "Discard"), overwrite=True)
            self._layers["points"] = pts
        pts.feature_defaults = {"kind": "positive"}
        pts.visible = True
        self._active = True
        pts.mode = "add"
        self.viewer.layers.selection.active = pts
        self._on_kind(self.negative.isChecked())
        self.status.setText(f"click inside the structure ({'refining' if self.refine else 'new'} class {value}); "
                            "N: negative clicks, Enter: accept, Escape: discard")

    def draw_box(self):
        if not self._active:  # no session yet (parked layers are not one)
            self.start()
        image = self.image_layer()
        geo = {"scale": image.scale, "translate": image.translate, "affine": image.affine.affine_matrix}
        box = self._reusable("box", image)
        if box is None:
            box = self.viewer.add_shapes(ndim=3, name=BOX_NAME, edge_color="yellow", face_color="transparent",
                                         edge_width=1.5, **geo)
            box.events.data.connect(self._on_prompts)
            self._layers["box"] = box
        box.visible = True
        self.viewer.layers.selection.active = box
        self._layers["box"].mode = "add_rectangle"

    def _on_kind(self, negative: bool):
        pts = self._layers.get("points")
        kind = "negative" if negative else "positive"
        if pts is not None:
            pts.feature_defaults = {"kind": kind}
            pts.current_face_color = COLORS[kind]

    def prompts(self) -> dict:
        """The current prompts in voxels of the image: positive, negative, box."""
        out = {"positive": [], "negative": [], "box": None}
        pts = self._layers.get("points")
        if pts is not None:
            for p, k in zip(np.asarray(pts.data), _kinds(pts)):
                out["negative" if k == "negative" else "positive"].append(tuple(float(v) for v in p))
        box = self._layers.get("box")
        if box is not None and len(box.data):
            v = np.asarray(box.data[-1])
            ks = np.unique(np.rint(v[:, 0]).astype(int))
            lo, hi = v.min(axis=0), v.max(axis=0)
            if len(ks) == 1:
                out["box"] = (int(ks[0]), (lo[1], lo[2]), (hi[1], hi[2]))
            else:
                out["box"] = (tuple(lo), tuple(hi))
        return out

    def _on_prompts(self, event=None):
        if not self._active:  # the layers being emptied at the end of a session
            return
        action = str(getattr(event, "action", ""))
        if action.endswith(("adding", "removing", "changing")):  # napari's "before" events: wait for the change
            return
        if action.endswith("removed"):
            self._result = None  # a click was taken back: start again from the session's base
        pts = self._layers.get("points")
        if pts is not None and len(pts.data):
            colors = [COLORS.get(k, COLORS["positive"]) for k in _kinds(pts)]
            pts.face_color = colors
        self.request_run()

    # ------------------------------------------------------------------ running
    def _panel(self):
        from napari_medseg._napari._worker import ProgressPanel

        if self._progress is None:
            self._progress = ProgressPanel(self)
            self._layout.insertWidget(self._layout.count() - 1, self._progress)
        return self._progress

    def request_run(self):
        p = self.prompts()
        if not p["positive"] and p["box"] is None and not (self.refine and p["negative"]):
            self._set_preview(None)
            return
        panel = self._panel()
        if panel.running:
            self._pending = True
            return
        self._pending = False
        vol = self._volume
        previous = self._result.array if self._result is not None else self._base
        model = self.model

        def steps():
            yield Progress(0, 1, "prompt", "running the prompt model")
            self.warm_up.join()  # its throw-away click sets torch's thread count while it runs
            from napari_medseg.prompt import prompt_segment

            return prompt_segment(vol, positive=p["positive"], negative=p["negative"], box=p["box"],
                                  previous=previous, model=model)

        panel.start(steps, on_done=self._on_result, on_error=self._on_error, on_cancelled=lambda: None)

    def _on_result(self, result):
        self.runs += 1
        self._result = result
        self._boxes.append(result.meta.get("prompt", {}).get("source_box"))
        self.last_seconds = result.meta.get("prompt", {}).get("seconds")
        self._set_preview(result.array)
        n = int(result.array.sum())
        self.status.setText(f"preview: {n} voxels ({self.last_seconds} s, crop {result.meta['prompt']['crop_shape']}); "
                            "more clicks refine it; Enter accepts, Escape discards")
        if self._pending:
            self.request_run()

    def _on_error(self, exc):
        self._pending = False
        self.status.setText(f"prompt failed: {exc}")
        from napari.utils.notifications import show_error

        show_error(f"Prompt: {exc}")

    def _set_preview(self, mask):
        layer = self._layers.get("preview")
        if mask is None:
            if layer is not None:
                layer.visible = False
            return
        image = self.image_layer()
        layer = self._reusable("preview", image, np.shape(mask))
        if layer is None:
            layer = self.viewer.add_labels(np.asarray(mask, np.uint8), name=PREVIEW_NAME, opacity=0.55, scale=image.scale,
                                           translate=image.translate, affine=image.affine.affine_matrix)
            self._layers["preview"] = layer
            self.viewer.layers.selection.active = self._layers["points"]
        else:
            layer.data = np.asarray(mask, np.uint8)
            layer.visible = True

    # ------------------------------------------------------------------ accept / discard
    def current_slice(self) -> tuple[int, int]:
        dims = self.viewer.dims
        axis = int(dims.not_displayed[-1]) if dims.ndisplay == 2 and dims.not_displayed else 0
        return axis, int(dims.current_step[axis])

    def accept(self, background: bool = False) -> int | None:
        """Write the preview into the labels as one undoable edit; return the number of voxels changed.

        ``background`` (the Accept button and Enter): the voxels that change are found in the worker, on a copy
        of the labels under the session's crops taken now; only the write runs on the GUI thread (for a lung of
        a full-resolution CT the search is ~0.1 s). The labels are compared with the copy before the write: an
        edit made meanwhile is merged with, never overwritten. Returns None then; `accepting` is True until done."""
        from napari_medseg.prompt.apply import merge_in_box, merge_indices, union_box

        if self.accepting:
            return None
        if self._progress is not None and self._progress.running:
            raise InputError("the prompt model is still running; accept when the preview is up to date")
        if self._result is None:
            raise InputError("nothing to accept: click inside a structure first")
        labels = self.labels_layer()
        value, refine, overwrite = int(labels.selected_label), self.refine, self.overwrite.isChecked()
        result = self._result.array
        # only the source boxes of this session's crops can differ from the labels: a large CT is not scanned
        box = union_box(self._boxes, np.shape(labels.data))
        if not background:
            return self._write(labels, value, *merge_in_box(np.asarray(labels.data), result > 0, value, box, refine,
                                                            overwrite))
        before = np.array(np.asarray(labels.data)[box])  # the labels the worker merges with

        def steps():
            yield Progress(0, 1, "accept", "finding the voxels that change")
            local, values = merge_indices(before, result[box] > 0, value, refine, overwrite)
            return tuple(ix + s.start for ix, s in zip(local, box)), values

        def done(merged):
            self.accepting = False
            if not np.array_equal(np.asarray(labels.data)[box], before):  # edited meanwhile: merge with the edit
                merged = merge_in_box(np.asarray(labels.data), result > 0, value, box, refine, overwrite)
            self._write(labels, value, *merged)

        def stopped(exc=None):  # failed or cancelled: the session goes on, nothing was written
            self.accepting, self._active = False, True
            if exc is not None:
                self._on_error(exc)

        self.accepting, self._active = True, False  # clicks meanwhile are not a new prompt
        self.status.setText("accepting: finding the voxels that change")
        self._panel().start(steps, on_done=done, on_error=stopped, on_cancelled=stopped)
        return None

    def _write(self, labels, value: int, idx, values) -> int:
        n = int(values.size)
        axis, index = self.current_slice()
        if n:
            labels.data_setitem(idx, values)  # one history item: Ctrl+Z undoes the whole result
            record_prompt_edit(labels, axis, index if self.mark_reviewed.isChecked() else None)
        self._end_session()
        self.status.setText(f"accepted: {n} voxels of class {value} changed (Ctrl+Z undoes it)")
        self.accepted += 1
        return n

    def discard(self):
        if self.accepting:
            return  # Accept was pressed first: it is being written
        self._end_session()
        self.status.setText("discarded")

    def _end_session(self):
        self._park_layers()
        self._result, self._base, self._pending, self._boxes = None, None, False, []
        lab = self.labels_layer()
        if lab is not None:
            self.viewer.layers.selection.active = lab

    def _park_layers(self):
        """End a session's layers without removing them: clicks and box emptied, everything hidden, the clicks
        layer out of add mode. The next session reuses them. (Removing a layer makes napari run a full
        ``gc.collect()``: 0.3 s per layer with a CT open, a GUI stall on every Accept.)"""
        self._active = False
        for kind, layer in list(self._layers.items()):
            if layer not in self.viewer.layers:
                del self._layers[kind]
                continue
            if kind in ("points", "box") and len(layer.data):
                layer.data = np.empty((0, 3)) if kind == "points" else []
            if kind == "points":
                layer.mode = "pan_zoom"
            layer.visible = False

    def _reusable(self, kind: str, image, shape=None):
        """The parked layer of this kind when it is still in the viewer on ``image``'s grid (else it is removed)."""
        layer = self._layers.get(kind)
        if layer is None or layer not in self.viewer.layers:
            self._layers.pop(kind, None)
            return None
        same = (np.allclose(layer.scale, image.scale) and np.allclose(layer.translate, image.translate)
                and np.allclose(layer.affine.affine_matrix, image.affine.affine_matrix)
                and (shape is None or tuple(np.shape(layer.data)) == tuple(shape)))
        if not same:
            self.viewer.layers.remove(layer)
            del self._layers[kind]
            return None
        return layer
