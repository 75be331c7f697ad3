"""Issue 9, defects 12, 1 and 5a for training: labels in another axis order are reoriented exactly; fine-tune
outputs never over/around inputs; unwritable outputs and bad names are refused before any training."""

from __future__ import annotations

import hashlib

import numpy as np
import pytest
import torch

from training_helpers import blob_volumes, ft_config, tiny_card

from napari_medseg.errors import GeometryError, OutputNotWritableError, OutputOverInputError
from napari_medseg.io import read_volume, write_labels, write_volume
from napari_medseg.training.data import prepare_case
from napari_medseg.training.finetune import finetune
from napari_medseg.volume import Volume

SLICES = [(0, 10), (0, 14), (0, 18), (0, 22)]


def _reordered(labels: Volume, perm_ijk=(0, 1, 2), flip_ijk=(False, False, False)) -> Volume:
    """The same voxels stored in another axis order: new ITK axis a is old axis perm[a], reversed if flip[a]."""
    ijk = labels.array.transpose(2, 1, 0)
    new = np.transpose(ijk, perm_ijk)
    for a in range(3):
        if flip_ijk[a]:
            new = np.flip(new, axis=a)
    cols = labels.direction @ np.diag(labels.spacing)
    m = cols[:, list(perm_ijk)] * np.where(flip_ijk, -1.0, 1.0)
    start = [labels.size_ijk[perm_ijk[a]] - 1 if flip_ijk[a] else 0 for a in range(3)]
    first = np.zeros(3)
    for a in range(3):
        first[perm_ijk[a]] = start[a]
    spacing = np.linalg.norm(m, axis=0)
    return Volume(np.ascontiguousarray(new.transpose(2, 1, 0)), tuple(spacing), tuple(labels.index_to_physical(first)),
                  m / spacing, dict(labels.meta))


@pytest.mark.parametrize("perm, flip", [((0, 1, 2), (True, False, False)),  # LAS labels on an RAS/LPS image
                                        ((1, 0, 2), (False, True, False)),
                                        ((2, 0, 1), (True, False, True))])
def test_labels_in_another_axis_order_train_exactly_like_the_original(perm, flip):
    image, labels = blob_volumes(0)
    other = _reordered(labels, perm, flip)
    assert other.spatial_shape != labels.spatial_shape or other.orientation_code() != labels.orientation_code()
    back = other.on_grid_of(image)
    np.testing.assert_array_equal(back.array, labels.array)  # exact: no interpolation
    assert back.same_grid(image, tol=0)
    card = tiny_card()
    a, b = prepare_case(image, labels, card), prepare_case(image, other, card)
    assert torch.equal(a.target, b.target) and torch.equal(a.mask, b.mask)


def test_finetune_accepts_labels_stored_in_another_axis_order(tiny_parent):
    image, labels = blob_volumes(4)
    las = _reordered(labels, (0, 1, 2), (True, False, False))
    res = finetune(image, las, SLICES, model="tiny", config=ft_config(2, holdout=1))
    assert res.model_path.is_dir()


def test_a_real_grid_mismatch_names_what_differs():
    image, labels = blob_volumes(0)
    shifted = Volume(labels.array, labels.spacing, (2.0, 0.0, 0.0), labels.direction)
    with pytest.raises(GeometryError, match="centres are 2 mm apart"):
        shifted.on_grid_of(image)
    finer = Volume(labels.array, (1.0, 1.5, 1.5), labels.origin, labels.direction)
    with pytest.raises(GeometryError, match=r"spacing .*\(1, 1.5, 1.5\) vs \(1.5, 1.5, 1.5\)"):
        finer.on_grid_of(image)
    rot = np.array([[0.8, -0.6, 0], [0.6, 0.8, 0], [0, 0, 1.0]])
    with pytest.raises(GeometryError, match="rotated by 36.9 degrees"):
        Volume(labels.array, labels.spacing, labels.origin, rot).on_grid_of(image)
    cut = Volume(labels.array[:-1], labels.spacing, labels.origin, labels.direction)
    with pytest.raises(GeometryError, match=r"shape \(k, j, i\) \(31, 32, 32\) vs \(32, 32, 32\)"):
        cut.on_grid_of(image)


def test_write_labels_in_another_axis_order_lands_on_the_reference_grid(tmp_path):
    image, labels = blob_volumes(0)
    other = _reordered(labels, (1, 0, 2), (True, False, False))
    out = read_volume(write_labels(other, tmp_path / "l.nii.gz", reference=image))
    assert out.same_grid(image) and np.array_equal(out.array, labels.array)


def _files(path):
    return {str(p): hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(path.rglob("*")) if p.is_file()}


def test_finetune_output_over_its_parent_or_around_its_image_is_refused(tiny_parent, tmp_path, monkeypatch):
    import napari_medseg.training.finetune_stages as ft

    image, labels = blob_volumes(0)
    img_path = write_volume(image, tmp_path / "data" / "ct.nii.gz")
    image = read_volume(img_path)
    before, parent_before = _files(tmp_path / "data"), _files(tiny_parent)
    monkeypatch.setattr(ft, "training_steps", lambda *a, **k: pytest.fail("training started"))
    with pytest.raises(OutputOverInputError, match="is the input folder"):
        finetune(image, labels, SLICES, model=str(tiny_parent), output=tiny_parent, force=True, config=ft_config(2))
    with pytest.raises(OutputOverInputError, match="contains the input"):
        finetune(image, labels, SLICES, model="tiny", output=tmp_path / "data", force=True, config=ft_config(2))
    assert _files(tmp_path / "data") == before and _files(tiny_parent) == parent_before


def test_finetune_to_an_unwritable_folder_is_refused_before_training(tiny_parent, tmp_path, monkeypatch):
    import napari_medseg.training.finetune_stages as ft
    from tests.test_outputs_over_inputs import unwritable_folder

    image, labels = blob_volumes(0)
    monkeypatch.setattr(ft, "training_steps", lambda *a, **k: pytest.fail("training started"))
    with unwritable_folder(tmp_path / "ro") as ro:
        with pytest.raises(OutputNotWritableError, match="not writable"):
            finetune(image, labels, SLICES, model="tiny", output=ro / "pkg", config=ft_config(2))


def test_train_output_around_its_training_files_is_refused(tmp_path, monkeypatch):
    import napari_medseg.training.train as tr
    from napari_medseg.training.train import train

    image, labels = blob_volumes(0)
    img = write_volume(image, tmp_path / "data" / "ct.nii.gz")
    lab = write_labels(labels, tmp_path / "data" / "lab.nii.gz")
    before = _files(tmp_path / "data")
    monkeypatch.setattr(tr, "train_steps", lambda *a, **k: pytest.fail("training started"))
    for out in (tmp_path / "data", img, tmp_path / "data" / "." / "lab.nii.gz"):
        with pytest.raises(OutputOverInputError):
            train([img], [lab], out, force=True)
    assert _files(tmp_path / "data") == before
