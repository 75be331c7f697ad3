"""Segment widget: one image combo per channel of a multi-channel bundle; "Get from MONAI Model Zoo…" (loopback)."""

from __future__ import annotations

import hashlib
import json

import nibabel as nib
import numpy as np
import pytest
from qtpy.QtCore import Qt

import zoo_factory as zf
from napari_medseg.errors import InputError

pytestmark = pytest.mark.gui
TIMEOUT_MS = 120_000


@pytest.fixture(autouse=True)
def _isolated(tmp_path, monkeypatch):
    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("MEDSEG_CONFIG_DIR", str(tmp_path / "config"))
    monkeypatch.delenv("MEDSEG_SYNC", raising=False)


def _four_channel_bundle(root):
    import torch
    from monai.networks.nets import SegResNet

    cfg = zf.brats_like()
    torch.manual_seed(0)
    net = SegResNet(**{k: v for k, v in cfg["network_def"].items() if k != "_target_"})
    meta = zf.metadata("BraTS-like", "0.1.0", ["Tumor core", "Whole tumor", "Enhancing tumor"],
                       inputs=["T1c", "T1", "T2", "FLAIR"], in_channels=4)
    return zf.write_bundle(root, cfg, meta, {"models/model.pt": net.state_dict()})


def test_one_combo_per_channel(make_napari_viewer, qtbot, tmp_path):
    from napari_medseg import segment
    from napari_medseg._napari.layers import image_layer_data
    from napari_medseg._napari.segment_widget import SegmentWidget
    from napari_medseg.io import read_volume

    bundle = _four_channel_bundle(tmp_path / "brats_like")
    viewer = make_napari_viewer()
    paths = []
    for c, name in enumerate(["flair", "t2", "t1", "t1c"]):  # opened in another order than the model's
        arr = zf.blob_ct((40, 36, 24), seed=20 + c, scale=1.0) * 100 + 400
        p = tmp_path / f"{name}.nii.gz"
        nib.save(nib.Nifti1Image(arr.astype(np.float32), np.diag([1.0, 1.0, 1.5, 1.0])), p)
        data, kwargs, _ = image_layer_data(read_volume(p), name=name)
        viewer.add_image(data, **kwargs)
        paths.append(p)
    widget = SegmentWidget(viewer)
    viewer.window.add_dock_widget(widget, name="Segment")
    assert not widget.channels.active
    widget.add_model_path(bundle)
    widget.device_combo.setCurrentText("cpu")
    assert widget.channels.active and widget.channels.names == ["T1c", "T1", "T2", "FLAIR"]
    # layers named like the channels are chosen for them
    assert [c.currentText() for c in widget.channels.combos] == ["t1c", "t1", "t2", "flair"]
    qtbot.mouseClick(widget.run_button, Qt.MouseButton.LeftButton)
    qtbot.waitUntil(lambda: not widget.panel.running, timeout=TIMEOUT_MS)
    assert widget.result is not None, widget.info.text()
    expected = segment([paths[3], paths[2], paths[1], paths[0]], model=bundle, device="cpu")
    assert np.array_equal(np.asarray(widget.result_layer.data), expected.labels.array)
    widget.channels.choose(["t1c", "t1", "t2", "t2"])
    with pytest.raises(InputError, match="'t2' is chosen for both T2 and FLAIR"):
        widget.channels.volume()


def test_get_from_the_zoo_dialog(make_napari_viewer, qtbot, tmp_path):
    from napari_medseg._napari.segment_widget import SegmentWidget
    from napari_medseg.models.registry import active_version

    bundle = _four_channel_bundle(tmp_path / "brats_like")
    blob = zf.zip_bundle(bundle, tmp_path / "b.zip", "brats_like_segmentation")
    srv = zf.LoopbackServer()
    try:
        srv.routes["/brats.zip"] = blob
        index = {"brats_like_segmentation_v0.1.0": {"checksum": hashlib.sha1(blob).hexdigest(),
                                                    "source": srv.base + "/brats.zip"},
                 "mednist_gan_v0.1.0": {"checksum": None, "source": srv.base + "/none.zip"}}
        srv.routes["/model_info.json"] = json.dumps(index).encode()
        viewer = make_napari_viewer()
        widget = SegmentWidget(viewer)
        dialog = widget._open_zoo(index_url=srv.base + "/model_info.json")
        qtbot.waitUntil(lambda: not dialog.panel.running, timeout=TIMEOUT_MS)
        assert [dialog.list.item(i).text() for i in range(dialog.list.count())] == ["brats_like_segmentation"]
        dialog.select("brats_like_segmentation", "0.1.0")
        qtbot.mouseClick(dialog.get_button, Qt.MouseButton.LeftButton)
        qtbot.waitUntil(lambda: not dialog.panel.running, timeout=TIMEOUT_MS)
        assert dialog.pulled is not None, dialog.panel.status.text()
        assert active_version("brats_like_segmentation") == "0.1.0"
        assert widget.model_combo.currentData() == "brats_like_segmentation@0.1.0"
        assert widget.channels.active  # the pulled 4-channel bundle shows its channel combos
        dialog.close()
    finally:
        srv.close()
