"""`Geometry`: one validated, frozen grid type; records stored in layers/sessions read both ways."""

from __future__ import annotations

import dataclasses

import numpy as np
import pytest

from napari_medseg.errors import GeometryError
from napari_medseg.volume import Geometry, Volume, geometry_volume


def _rot(deg: float) -> np.ndarray:
    c, s = np.cos(np.radians(deg)), np.sin(np.radians(deg))
    return np.array([[c, -s, 0.0], [s, c, 0.0], [0.0, 0.0, 1.0]])


def oblique_volume(shape=(5, 6, 7)) -> Volume:
    return Volume(np.arange(np.prod(shape), dtype=np.int16).reshape(shape), (0.7, 0.9, 2.5), (-10.0, 4.0, 33.0),
                  _rot(20) @ np.diag([1.0, -1.0, -1.0]), {"source_path": "/data/ct.nii.gz"})


@pytest.mark.parametrize(
    "kwargs, match",
    [
        (dict(shape=(2, 3.5, 4)), "3 positive integers"),
        (dict(shape=(2, 0, 4)), "3 positive integers"),
        (dict(shape=(2, 3)), "3 positive integers"),
        (dict(shape=(2, 3, 4), spacing=(1.0, 0.0, 1.0)), "spacing must be positive"),
        (dict(shape=(2, 3, 4), spacing=(1.0, np.nan, 1.0)), "non-finite"),
        (dict(shape=(2, 3, 4), origin=(0.0, np.inf, 0.0)), "non-finite"),
        (dict(shape=(2, 3, 4), direction=[[1, 0.2, 0], [0, 1, 0], [0, 0, 1]]), "not orthonormal"),
    ],
)
def test_invalid_geometry_is_a_geometry_error(kwargs, match):
    with pytest.raises(GeometryError, match=match):
        Geometry(**kwargs)


def test_source_is_named_in_errors_and_not_stored():
    with pytest.raises(GeometryError, match="in /x/y.nrrd"):
        Geometry((2, 3, 4), direction=np.ones((3, 3)), source="/x/y.nrrd")
    g = Geometry((2, 3, 4), source="/x/y.nrrd")
    assert "source" not in g.to_record() and g == Geometry((2, 3, 4))


def test_frozen_and_read_only():
    g = Geometry((2, 3, 4), (1.0, 2.0, 3.0))
    with pytest.raises(dataclasses.FrozenInstanceError):
        g.spacing = (1.0, 1.0, 1.0)  # type: ignore[misc]
    with pytest.raises(ValueError):
        g.direction[0, 0] = 5.0
    assert g.shape == (2, 3, 4) and all(isinstance(v, int) for v in g.shape)
    assert g.replace(origin=(1, 2, 3)).origin == (1.0, 2.0, 3.0) and g.origin == (0.0, 0.0, 0.0)


def test_equality_and_same_grid_with_tolerance():
    g = oblique_volume().geometry
    near = g.replace(origin=tuple(np.add(g.origin, 5e-5)))
    far = g.replace(origin=tuple(np.add(g.origin, 1e-2)))
    assert g == Geometry.of(oblique_volume()) and g != near  # == is exact (1e-6)
    assert g.same_grid(near) and not g.same_grid(far) and g.same_grid(far, tol=0.1)
    assert not g.same_grid(g.replace(shape=(5, 6, 8)))
    assert oblique_volume().same_grid(near)  # Volume.same_grid takes a Geometry
    with pytest.raises(TypeError):
        hash(g)


def test_transforms_match_the_volume_and_napari():
    vol = oblique_volume()
    g = vol.geometry
    ijk = np.array([[0, 0, 0], [6, 5, 4], [3.5, 1.25, 2]], float)
    lps = g.index_to_physical(ijk)
    np.testing.assert_allclose(lps, ijk @ (vol.direction @ np.diag(vol.spacing)).T + vol.origin)
    np.testing.assert_allclose(g.physical_to_index(lps), ijk, atol=1e-9)
    np.testing.assert_allclose(g.affine_lps(), vol.affine_lps())
    np.testing.assert_allclose(g.nifti_affine(), vol.nifti_affine())
    assert g.orientation_code() == vol.orientation_code() and g.is_axis_aligned() is False
    kw = g.napari_kwargs()
    back = Geometry.from_napari(vol.shape, kw["scale"], kw["translate"], kw.get("affine"))
    assert back.same_grid(g, tol=1e-9)
    kw4 = Volume(np.zeros((2, *vol.shape)), vol.spacing, vol.origin, vol.direction).napari_kwargs()
    assert kw4["scale"][0] == 1.0 and np.asarray(kw4["affine"]).shape == (5, 5)


def test_record_round_trip_and_old_records():
    vol = oblique_volume()
    g = vol.geometry
    assert Geometry.from_record(g.to_record()) == g
    import json

    assert Geometry.from_record(json.loads(json.dumps(g.to_record()))) == g
    # the record napari-medseg layers and sessions stored before Geometry existed: full (4D) shape, dtype,
    # meta, and a 3x3 direction; SeriesInfo-style flat row-major direction too
    old = {"shape": [3, 5, 6, 7], "dtype": "int16", "spacing": [0.7, 0.9, 2.5], "origin": [-10.0, 4.0, 33.0],
           "direction": vol.direction.tolist(), "meta": {"source_path": "/data/ct.nii.gz"}}
    assert Geometry.from_record(old) == g
    assert Geometry.from_record({**old, "direction": list(vol.direction.reshape(-1))}) == g
    with pytest.raises(GeometryError, match="lacks origin"):
        Geometry.from_record({"shape": [1, 2, 3], "spacing": [1, 1, 1], "direction": np.eye(3).tolist()})


def test_grid_is_geometry_and_resampling_still_takes_it():
    from napari_medseg.inference.resample import Grid, resample

    vol = oblique_volume()
    assert Grid is Geometry and Grid.of(vol) == vol.geometry
    out = resample(vol.array, vol.geometry, Grid.of(vol), mode="nearest")
    np.testing.assert_array_equal(out, vol.array)


def test_geometry_volume_allocates_nothing():
    g = Geometry((400, 512, 512), (0.7, 0.7, 1.0))
    blank = geometry_volume(g, {"modality": "CT"})
    assert blank.geometry == g and blank.meta["modality"] == "CT"
    assert blank.array.strides == (0, 0, 0) and blank.array.base is not None and blank.array.base.size == 1


def test_series_info_geometry_equals_the_volume_read(tmp_path):
    from napari_medseg.io import list_series, read_volume, write_volume

    vol = oblique_volume()
    for name in ("ct.nii.gz", "ct.nrrd"):
        path = write_volume(vol, tmp_path / name)
        info = list_series(path)[0]
        assert info.geometry.same_grid(read_volume(path).geometry, tol=1e-5)
        assert info.geometry.same_grid(vol.geometry, tol=1e-5) and info.orientation == vol.orientation_code()


def test_session_of_an_old_record_is_the_session_of_its_volume(tmp_path, monkeypatch):
    from napari_medseg.session import Session, session_key

    monkeypatch.setenv("MEDSEG_HOME", str(tmp_path / "home"))
    vol = oblique_volume()
    old = {"shape": list(vol.shape), "dtype": "int16", "spacing": list(vol.spacing), "origin": list(vol.origin),
           "direction": vol.direction.tolist(), "meta": dict(vol.meta)}
    assert session_key(old) == session_key(vol)
    Session.for_image(vol).save("labels", np.ones(vol.shape, np.uint8))
    assert Session.for_image(old).load("labels").array.sum() == vol.array.size
