"""A synthetic, CT-like abdomen phantom with ground-truth labels (sample data, tests, demos).

:func:`make_phantom` builds, in well under a second for the default size, an int16 CT volume in HU and a
uint8 labels volume on the same grid:

* air outside the body (-1000 HU), a body ellipse with subcutaneous fat (-100), an abdominal-wall muscle
  ring (40) and an abdominal cavity of fat (-90) with bowel-like soft tissue (20..35);
* liver (~60 HU) on the **patient right** (LPS: right is -x, i.e. low ``i`` with the identity direction),
  with one or more hypodense tumours (~25 HU) inside it;
* spleen (~50 HU) on the patient left; two kidneys posterior (cortex ~35, medulla ~25);
* spine posterior midline: vertebral body (cancellous ~300 HU inside a ~700 HU cortex) and spinous process,
  flanked by paraspinal muscles (~45 HU).

Organ boundaries carry partial-volume values (the fraction of each voxel inside an organ is estimated from a
first-order signed distance in voxel units), then a small point-spread blur and correlated noise (default
15 HU) are added. Organs change shape and position along ``k`` (ellipsoids whose in-plane axes and centres
drift with height). ``seed`` varies sizes and positions a little; ``hu_offset``/``contrast`` shift the
intensity distribution (another scanner or contrast phase) while leaving the labels unchanged.

Label values are those of :mod:`napari_medseg.classes` (1 liver, 2 spleen, 3 kidney_right, 4 kidney_left,
5 liver_tumour, 6 spine).
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from napari_medseg.classes import ABDOMEN_CLASSES, class_names
from napari_medseg.volume import Volume

LIVER, SPLEEN, KIDNEY_R, KIDNEY_L, TUMOUR, SPINE = 1, 2, 3, 4, 5, 6

DEFAULT_SHAPE = (48, 128, 128)  # array order (k, j, i), like Volume.shape
DEFAULT_SPACING = (0.8, 0.8, 2.5)  # (i, j, k) mm, like Volume.spacing
#: Geometry of the sample data users open (napari sample data, ``medseg sample``, ``medseg demo``): an
#: adult-sized 35 cm field of view at anisotropic 2.2 x 2.2 x 3.5 mm, like a thick-slice clinical CT.
#: `make_phantom`'s own default is a small 10 cm block, quick for tests.
SAMPLE_GEOMETRY = {"shape": (48, 160, 160), "spacing": (2.2, 2.2, 3.5)}

SAMPLE_NAMES = ("abdomen", "abdomen-dicom")


class _Grid:
    """Physical coordinates of the voxel centres, as broadcastable float32 arrays."""

    def __init__(self, shape, spacing, origin):
        nk, nj, ni = shape
        si, sj, sk = spacing
        self.spacing = np.asarray(spacing, dtype=np.float32)
        self.x = (origin[0] + si * np.arange(ni, dtype=np.float32))[None, None, :]
        self.y = (origin[1] + sj * np.arange(nj, dtype=np.float32))[None, :, None]
        self.z = (origin[2] + sk * np.arange(nk, dtype=np.float32))[:, None, None]
        self.shape = tuple(shape)
        # In-plane unit R (mm): half of the smaller in-plane field of view; z runs over [z0, z1].
        self.R = float(min(ni * si, nj * sj) / 2.0)
        self.z0 = float(origin[2])
        self.z1 = float(origin[2] + sk * (nk - 1))

    def w(self, frac: float) -> float:
        """Physical z of a fraction of the scanned height (0 = inferior end, 1 = superior end)."""
        return self.z0 + frac * (self.z1 - self.z0)


def _ellipsoid(g: _Grid, centre, semi, drift=(0.0, 0.0), wobble=0.0, phase=0.0) -> np.ndarray:
    """Voxel fraction (0..1, float32) inside an ellipsoid whose in-plane shape varies along z.

    ``centre``/``semi`` are (x, y, z) in mm; ``drift`` moves the in-plane centre by (dx, dy) mm per unit
    of normalised height (-1..1 across the ellipsoid); ``wobble`` modulates the in-plane semi-axes
    (relative amplitude) along z. The fraction is ``clip(0.5 - d, 0, 1)`` with ``d`` the first-order
    signed distance to the surface in voxel units, a cheap partial-volume model.
    """
    cx, cy, cz = centre
    a, b, c = semi
    t = (g.z - cz) / c  # normalised height, [-1, 1] inside
    scale = 1.0 + wobble * np.sin(np.pi * t + phase)
    ax, by = a * scale, b * scale
    dx = (g.x - (cx + drift[0] * t)) / ax
    dy = (g.y - (cy + drift[1] * t)) / by
    q = dx * dx + dy * dy + t * t
    r = np.sqrt(q)
    # gradient of r with respect to voxel indices: (dr/dx * si, dr/dy * sj, dr/dz * sk)
    si, sj, sk = g.spacing
    inv = 1.0 / np.maximum(r, 1e-6)
    gi = dx / ax * si * inv
    gj = dy / by * sj * inv
    gk = t / c * sk * inv
    grad = np.sqrt(gi * gi + gj * gj + gk * gk)
    d = (r - 1.0) / np.maximum(grad, 1e-6)
    return np.clip(0.5 - d, 0.0, 1.0).astype(np.float32)


def _paint(hu: np.ndarray, frac: np.ndarray, value) -> None:
    """Alpha-blend ``value`` (scalar or array) into ``hu`` with per-voxel coverage ``frac``."""
    hu *= 1.0 - frac
    hu += frac * value


def _smooth(a: np.ndarray, sigma) -> np.ndarray:
    from scipy.ndimage import gaussian_filter

    return gaussian_filter(a, sigma, mode="nearest")


def make_phantom(
    seed: int = 0,
    shape: tuple[int, int, int] = DEFAULT_SHAPE,
    spacing: tuple[float, float, float] = DEFAULT_SPACING,
    *,
    noise: float = 15.0,
    hu_offset: float = 0.0,
    contrast: float = 1.0,
    n_tumours: int | None = None,
    origin: tuple[float, float, float] | None = None,
) -> tuple[Volume, Volume]:
    """Return ``(image, labels)``: a CT-like abdomen in HU (int16) and its ground truth (uint8).

    Parameters
    ----------
    seed
        Seeds everything random: organ sizes/positions (a few percent), tumour count/placement, texture, noise.
    shape
        Array shape ``(k, j, i)`` (the resulting ``Volume.shape``); default ``(48, 128, 128)``.
    spacing
        Voxel size ``(i, j, k)`` in mm (``Volume.spacing`` order); default anisotropic ``(0.8, 0.8, 2.5)``.
    noise
        Standard deviation of the (spatially correlated) noise in HU.
    hu_offset, contrast
        Distribution shift for domain-shift experiments: every tissue (not air) gets ``+hu_offset``; organ
        enhancement above 40 HU soft tissue is multiplied by ``contrast`` (e.g. 1.6 for a portal-venous-like
        phase, 0.5 for a nearly unenhanced one). Labels do not change.
    n_tumours
        Number of liver tumours (default: 1 to 3, from ``seed``).
    origin
        LPS position of voxel (0, 0, 0); default centres the volume on the origin. Direction is the identity.

    Labels follow :data:`napari_medseg.classes.ABDOMEN_CLASSES`; ``labels.meta["classes"]`` is the
    ``{value: name}`` table (0 = background).
    """
    shape = tuple(int(s) for s in shape)
    if len(shape) != 3 or min(shape) < 4:
        raise ValueError(f"shape must be 3 sizes (k, j, i), each >= 4, got {shape}")
    spacing = tuple(float(s) for s in spacing)
    if len(spacing) != 3 or min(spacing) <= 0:
        raise ValueError(f"spacing must be 3 positive values (i, j, k) in mm, got {spacing}")
    nk, nj, ni = shape
    if origin is None:
        origin = tuple(-(n - 1) * s / 2.0 for n, s in zip((ni, nj, nk), spacing))
    rng = np.random.default_rng(seed)
    g = _Grid(shape, spacing, origin)
    R = g.R
    H = g.z1 - g.z0 + spacing[2]  # scanned height in mm

    def jit(scale=0.04):
        return float(rng.uniform(-scale, scale))

    def size(scale=0.08):
        return float(1.0 + rng.uniform(-scale, scale))

    mid = g.w(0.5)
    tall = 2.0 * H  # extent along z of structures that run through the whole scan

    def enh(base_hu):
        """Organ HU under the contrast setting: enhancement above 40 HU scaled."""
        return 40.0 + contrast * (base_hu - 40.0)

    hu = np.full(shape, -1000.0, dtype=np.float32)
    labels = np.zeros(shape, dtype=np.uint8)

    # --- body: fat, muscle wall, abdominal cavity with fat and bowel-like soft tissue
    bs = size(0.05)
    body_semi = (0.92 * R * bs, 0.70 * R * bs, tall)
    body = _ellipsoid(g, (0, 0.02 * R, mid), body_semi, wobble=0.03, phase=rng.uniform(0, np.pi))
    _paint(hu, body, -100.0)
    wall = _ellipsoid(g, (0, 0.02 * R, mid), (body_semi[0] * 0.88, body_semi[1] * 0.86, tall), wobble=0.03)
    _paint(hu, wall, 40.0)
    cavity = _ellipsoid(g, (0, 0.02 * R, mid), (body_semi[0] * 0.82, body_semi[1] * 0.78, tall), wobble=0.03)
    field = rng.standard_normal((max(nk // 2, 2), max(nj // 4, 2), max(ni // 4, 2))).astype(np.float32)
    field = _smooth(field, 1.2)
    from scipy.ndimage import zoom

    field = zoom(field, [s / f for s, f in zip(shape, field.shape)], order=1)[:nk, :nj, :ni]
    field = field / (field.std() + 1e-6)
    bowel = np.clip((field - 0.1) * 2.0, 0.0, 1.0)  # ~45% soft tissue, smooth transitions
    cavity_hu = -90.0 * (1.0 - bowel) + (20.0 + 15.0 * np.clip(field, 0, 1)) * bowel
    _paint(hu, cavity, cavity_hu)

    # --- paraspinal muscles (not labelled) and psoas in the lower half
    for side in (-1, 1):
        m = _ellipsoid(g, (side * 0.22 * R, 0.55 * R, mid), (0.14 * R, 0.11 * R, tall), wobble=0.05)
        _paint(hu, m, 45.0)
        psoas_c = (side * 0.17 * R, 0.36 * R, g.w(0.1))
        p = _ellipsoid(g, psoas_c, (0.07 * R, 0.07 * R, 0.5 * H), drift=(side * 0.04 * R, 0))
        _paint(hu, p, 45.0)

    # --- liver (patient right = -x) with tumours
    liver_c = ((-0.40 + jit()) * R, (-0.04 + jit()) * R, g.w(0.72 + jit(0.05)))
    liver_s = (0.36 * R * size(), 0.44 * R * size(), 0.55 * H * size())
    liver = _ellipsoid(g, liver_c, liver_s, drift=(0.10 * R, 0.05 * R), wobble=0.12, phase=rng.uniform(0, 1))
    _paint(hu, liver, enh(60.0))
    labels[liver >= 0.5] = LIVER
    count = int(rng.integers(1, 4)) if n_tumours is None else int(n_tumours)
    tumour_any = np.zeros(shape, dtype=np.float32)
    for _ in range(count):
        # a point well inside the liver's upper part (kidneys overlap its lower part)
        tr = float(rng.uniform(0.10, 0.15)) * R
        tr_z = max(tr, 1.5 * spacing[2])
        ang = rng.uniform(0, 2 * np.pi)
        rad = rng.uniform(0.0, 0.45)
        tc = (
            liver_c[0] + rad * np.cos(ang) * (liver_s[0] - tr),
            liver_c[1] + rad * np.sin(ang) * (liver_s[1] - tr),
            liver_c[2] + rng.uniform(0.0, 0.35) * liver_s[2],
        )
        t = _ellipsoid(g, tc, (tr * size(0.15), tr * size(0.15), tr_z))
        tumour_any = np.maximum(tumour_any, t)
    tumour = tumour_any * liver  # only inside the liver
    _paint(hu, tumour, enh(25.0) + rng.uniform(-3, 3))
    labels[(tumour_any >= 0.5) & (labels == LIVER)] = TUMOUR

    # --- spleen (patient left = +x), posterior-lateral
    spleen_c = ((0.56 + jit()) * R, (0.12 + jit()) * R, g.w(0.75 + jit(0.05)))
    spleen = _ellipsoid(
        g, spleen_c, (0.16 * R * size(), 0.26 * R * size(), 0.30 * H * size()), drift=(-0.05 * R, 0.06 * R), wobble=0.1
    )
    _paint(hu, spleen, enh(50.0))
    labels[spleen >= 0.5] = SPLEEN

    # --- kidneys, posterior, lower half; cortex and medulla
    for label, side in ((KIDNEY_R, -1), (KIDNEY_L, 1)):
        kc = (side * (0.36 + jit()) * R, (0.34 + jit()) * R, g.w(0.32 + jit(0.05) + (0.04 if side < 0 else 0)))
        ks = (0.12 * R * size(), 0.16 * R * size(), 0.22 * H * size())
        kid = _ellipsoid(g, kc, ks, drift=(side * 0.03 * R, 0.02 * R), wobble=0.08)
        _paint(hu, kid, enh(35.0))
        med = _ellipsoid(g, (kc[0] + side * 0.02 * R, kc[1], kc[2]), (ks[0] * 0.55, ks[1] * 0.55, ks[2] * 0.7))
        _paint(hu, med, enh(25.0))
        labels[kid >= 0.5] = label

    # --- spine: vertebral body (cortex + cancellous) and spinous process, the whole height
    vb_c = (jit(0.01) * R, (0.46 + jit(0.02)) * R, mid)
    vb_s = (0.13 * R * size(0.05), 0.11 * R * size(0.05), tall)
    vb = _ellipsoid(g, vb_c, vb_s, wobble=0.04)
    _paint(hu, vb, 700.0)
    inner = _ellipsoid(g, vb_c, (vb_s[0] - 1.6 * spacing[0], vb_s[1] - 1.6 * spacing[1], tall), wobble=0.04)
    _paint(hu, inner, 300.0)
    sp_c = (vb_c[0], vb_c[1] + vb_s[1] + 0.06 * R, mid)
    spinous = _ellipsoid(g, sp_c, (0.035 * R, 0.09 * R, tall))
    _paint(hu, spinous, 550.0)
    spine = np.maximum(vb, spinous)
    labels[spine >= 0.5] = SPINE

    # --- tissue shift (not air), point-spread blur, correlated noise
    if hu_offset:
        hu += hu_offset * body
    hu = _smooth(hu, (0.3, 0.5, 0.5))
    if noise > 0:
        n = rng.standard_normal(shape).astype(np.float32)
        n = _smooth(n, (0.3, 0.7, 0.7))
        n *= noise / (n.std() + 1e-6)
        hu += n
    img = np.clip(np.rint(hu), -1024, 3071).astype(np.int16)

    params = {
        "seed": int(seed),
        "noise": float(noise),
        "hu_offset": float(hu_offset),
        "contrast": float(contrast),
        "n_tumours": count,
    }
    image = Volume(
        img,
        spacing,
        origin,
        np.eye(3),
        {
            "modality": "CT",
            "series_description": "medseg abdomen phantom",
            "original_dtype": "int16",
            "rescale": (1.0, 0.0),
            "phantom": params,
        },
    )
    label_vol = image.with_array(labels, classes=class_names(ABDOMEN_CLASSES), modality="SEG")
    label_vol.meta["series_description"] = "medseg abdomen phantom labels"
    return image, label_vol


def make_sample_phantom(seed: int = 0) -> tuple[Volume, Volume]:
    """The phantom of the sample data: `make_phantom` with `SAMPLE_GEOMETRY`."""
    return make_phantom(seed=seed, **SAMPLE_GEOMETRY)


def write_sample(name: str, out_dir, force: bool = False, seed: int = 0) -> dict[str, Path]:
    """Write sample ``name`` into ``out_dir``; returns {"image": path, "labels": path}.

    ``"abdomen"`` writes ``abdomen_ct.nii.gz`` + ``abdomen_labels.nii.gz``; ``"abdomen-dicom"`` writes a
    DICOM series folder ``abdomen_ct_dicom/`` + ``abdomen_ct_dicom_labels.nii.gz``. The image is read back through the
    real reader and the labels are written with it as reference, so they lie exactly on the image file's grid.
    Nothing is written when an output exists and ``force`` is false.
    """
    from napari_medseg._atomic import check_overwrite
    from napari_medseg.errors import InputError, OutputExistsError
    from napari_medseg.io import read_volume
    from napari_medseg.io.writers import write_labels, write_volume

    if name not in SAMPLE_NAMES:
        raise InputError(f"unknown sample {name!r}; available: {', '.join(SAMPLE_NAMES)}")
    out = Path(out_dir)
    img_target = out / ("abdomen_ct.nii.gz" if name == "abdomen" else "abdomen_ct_dicom")
    lab_target = out / ("abdomen_labels.nii.gz" if name == "abdomen" else "abdomen_ct_dicom_labels.nii.gz")
    check_overwrite(lab_target, force)
    if name == "abdomen":
        check_overwrite(img_target, force)
    elif img_target.exists() and (not img_target.is_dir() or any(img_target.iterdir())) and not force:
        raise OutputExistsError(f"{img_target} already exists; refusing to overwrite it (pass force=True / --force)")
    image, labels = make_sample_phantom(seed=seed)
    classes = labels.meta["classes"]
    if name == "abdomen":
        img_path = write_volume(image, img_target, force=force)
    else:
        from napari_medseg.io.dicom_write import write_dicom_series

        write_dicom_series(
            image,
            img_target,
            series_description="medseg abdomen phantom",
            patient_name="Phantom^Abdomen",
            patient_id="MEDSEG-PHANTOM",
            force=force,
        )
        img_path = img_target
    reference = read_volume(img_path)
    lab_path = write_labels(labels, lab_target, classes=classes, reference=reference, force=force)
    return {"image": img_path, "labels": lab_path}
