from __future__ import annotations

import numpy as np
import pytest

from napari_medseg.classes import ABDOMEN_CLASSES
from napari_medseg.sample import KIDNEY_L, KIDNEY_R, LIVER, SPINE, SPLEEN, TUMOUR, make_phantom


@pytest.fixture(scope="module")
def phantom():
    return make_phantom(seed=0)


def test_phantom_grid_dtypes_and_meta(phantom):
    image, labels = phantom
    assert image.shape == (48, 128, 128)
    assert image.array.dtype == np.int16 and labels.array.dtype == np.uint8
    assert image.spacing == (0.8, 0.8, 2.5)
    assert labels.same_grid(image)
    assert image.meta["modality"] == "CT"
    assert {v: n for v, n in labels.meta["classes"].items() if v} == {v: n for v, (n, _) in ABDOMEN_CLASSES.items()}
    assert set(np.unique(labels.array)) == {0, 1, 2, 3, 4, 5, 6}


def test_phantom_anatomy_and_hu_ranges(phantom):
    image, labels = phantom
    a, lab = image.array.astype(float), labels.array
    k, j, i = np.indices(lab.shape)
    # LPS with identity direction: patient right is low i; posterior is high j.
    assert i[lab == LIVER].mean() < lab.shape[2] / 2 < i[lab == SPLEEN].mean()
    assert i[lab == KIDNEY_R].mean() < lab.shape[2] / 2 < i[lab == KIDNEY_L].mean()
    assert j[lab == SPINE].mean() > lab.shape[1] / 2
    assert j[lab == KIDNEY_R].mean() > j[lab == LIVER].mean()
    # organs vary in shape along k: the liver's per-slice area is not constant
    area = (lab == LIVER).sum(axis=(1, 2))
    assert area.max() > 2 * area[area > 0].min()

    def median(v):
        return float(np.median(a[lab == v]))

    assert median(0) < -900  # mostly air outside the body
    assert 50 <= median(LIVER) <= 70
    assert 40 <= median(SPLEEN) <= 60
    assert 20 <= median(KIDNEY_R) <= 40
    assert 15 <= median(TUMOUR) <= 35 and median(TUMOUR) < median(LIVER) - 20
    assert 250 <= median(SPINE) <= 700
    body = (a > -500) & (lab == 0)
    assert (a[body] < -50).sum() > 0.1 * body.sum()  # fat present
    # noise: std inside the liver core, 10-20 HU
    core = lab == LIVER
    assert 10 <= a[core].std() <= 25


def test_phantom_partial_volume_edges(phantom):
    image, labels = phantom
    a = image.array.astype(float)
    # voxels just at the liver boundary take intermediate values: smooth before noise
    liver = labels.array == LIVER
    from scipy.ndimage import binary_dilation

    ring = binary_dilation(liver) & ~liver
    assert np.median(a[ring]) < np.median(a[liver]) - 5


def test_phantom_seeded_and_varied():
    a1, l1 = make_phantom(seed=1, shape=(16, 48, 48))
    a2, l2 = make_phantom(seed=1, shape=(16, 48, 48))
    b, lb = make_phantom(seed=2, shape=(16, 48, 48))
    np.testing.assert_array_equal(a1.array, a2.array)
    np.testing.assert_array_equal(l1.array, l2.array)
    assert not np.array_equal(l1.array, lb.array)
    assert a1.shape == (16, 48, 48)


def test_phantom_distribution_shift_keeps_labels():
    base, lab = make_phantom(seed=0, shape=(16, 48, 48), noise=0)
    shifted, lab2 = make_phantom(seed=0, shape=(16, 48, 48), noise=0, hu_offset=40, contrast=1.5)
    np.testing.assert_array_equal(lab.array, lab2.array)
    liver = lab.array == LIVER
    diff = np.median(shifted.array[liver].astype(float)) - np.median(base.array[liver].astype(float))
    assert 40 < diff < 70  # +40 offset, +0.5 * (60-40) enhancement
    air = base.array < -990
    assert np.all(shifted.array[air] < -900)


def test_phantom_rejects_bad_shape():
    with pytest.raises(ValueError, match="shape"):
        make_phantom(shape=(2, 64, 64))


@pytest.mark.parametrize("geometry", [dict(shape=(16, 48, 48)), dict(shape=(24, 64, 64), spacing=(2.7, 2.7, 3.0))])
def test_every_class_present_and_tumours_inside_liver(geometry):
    from scipy.ndimage import binary_dilation

    for seed in range(4):
        _, labels = make_phantom(seed=seed, **geometry)
        lab = labels.array
        assert set(np.unique(lab)) == {0, 1, 2, 3, 4, 5, 6}, seed
        tumour = lab == TUMOUR
        rim = binary_dilation(tumour) & ~tumour
        assert np.mean(lab[rim] == LIVER) > 0.9, seed


def test_write_sample_errors(tmp_path):
    from napari_medseg.errors import InputError, OutputExistsError
    from napari_medseg.sample import write_sample

    with pytest.raises(InputError, match="abdomen-dicom"):
        write_sample("brain", tmp_path)
    (tmp_path / "abdomen_ct_dicom_labels.nii.gz").write_bytes(b"keep")
    with pytest.raises(OutputExistsError):
        write_sample("abdomen-dicom", tmp_path)
    assert not (tmp_path / "abdomen_ct_dicom").exists()  # nothing written before the refusal
    assert (tmp_path / "abdomen_ct_dicom_labels.nii.gz").read_bytes() == b"keep"
