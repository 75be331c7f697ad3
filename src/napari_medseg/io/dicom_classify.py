"""What a DICOM object is (an image, a segmentation, a structure set, another non-image object) and which
missing header attributes are given a safe default.

Rules:

* A **known SOP Class** decides: image storage classes (``... Image Storage``, Parametric Map) are images;
  Segmentation (SEG), RT Structure Set (RTSTRUCT) and every other known class (SR, presentation states,
  RT plans/doses, encapsulated documents, registrations, raw data, ...) are not — even when they carry
  Rows, Columns and pixel data, as a SEG does. `object_kind` returns ``"seg"``/``"rtstruct"`` for those two so
  that their readers (``napari_medseg.io.seg``/``rtstruct``) can dispatch on the same classification.
* A **missing, empty or unknown SOP Class UID** (anonymisers remove it; private classes): the object is an
  image when it has Rows and Columns (and pixel data, where the header says), with a warning naming the
  attribute.
* Type 1/2 attributes the pixel reader needs and that have a safe default are assumed with a warning naming
  the attribute: see `PIXEL_DEFAULTS` (plus SeriesInstanceUID and PixelSpacing in the scanner).
"""

from __future__ import annotations

from functools import lru_cache

from pydicom.uid import UID

SEG_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.66.4"
RTSTRUCT_SOP_CLASS = "1.2.840.10008.5.1.4.1.1.481.3"
#: Known classes whose name does not say "Image Storage" but that hold an image grid we read.
_IMAGE_LIKE = {"1.2.840.10008.5.1.4.1.1.30"}  # Parametric Map Storage

#: attribute -> (default, what it means) for values the pixel reader needs (DICOM type 1 in the Image
#: Pixel module, but missing in some exports).
PIXEL_DEFAULTS = {
    "SamplesPerPixel": (1, "one sample per pixel (greyscale)"),
    "PhotometricInterpretation": ("MONOCHROME2", "MONOCHROME2 (greyscale, 0 is black)"),
    "PixelRepresentation": (0, "unsigned values"),
}


def sop_class_name(uid: str) -> str:
    """The standard name of a SOP Class UID ('CT Image Storage'), or the UID itself when unknown."""
    try:
        name = UID(uid).name
    except Exception:  # noqa: BLE001
        return uid
    return name or uid


@lru_cache(maxsize=1024)
def object_kind(sop_class_uid: str, has_rows_columns: bool) -> tuple[str, str]:
    """``(kind, note)``: kind is ``"image"``, ``"seg"``, ``"rtstruct"`` or ``"non_image"``.

    ``note`` explains a non-image kind, or (for an image) names the SOP Class problem to warn about
    ('' when there is nothing to say).
    """
    uid = (sop_class_uid or "").strip()
    if uid == SEG_SOP_CLASS:
        return "seg", "a DICOM SEG (segmentation), not an image"
    if uid == RTSTRUCT_SOP_CLASS:
        return "rtstruct", "an RTSTRUCT (structure set), not an image"
    if not uid:
        if has_rows_columns:
            return "image", "SOPClassUID is missing or empty (read as an image: it has Rows, Columns and pixel data)"
        return "non_image", "no SOPClassUID and no Rows/Columns: not an image"
    name = sop_class_name(uid)
    known = name != uid
    if known and ("Image Storage" in name or uid in _IMAGE_LIKE):
        return ("image", "") if has_rows_columns else ("non_image", f"a '{name}' object without Rows/Columns")
    if known:
        return "non_image", f"a '{name}' object, not an image"
    if has_rows_columns:
        return "image", f"SOPClassUID {uid} is not a standard class (read as an image: it has Rows and Columns)"
    return "non_image", f"an object of unknown SOP Class {uid} without Rows/Columns"


def pixel_default_warnings(header) -> list[str]:
    """Warnings for missing/empty attributes of `PIXEL_DEFAULTS` and BitsStored (``header`` has ``get``)."""
    out = []
    for kw, (_default, meaning) in PIXEL_DEFAULTS.items():
        if header.get(kw) in (None, ""):
            out.append(f"{kw} is missing or empty (assumed {meaning})")
    if header.get("BitsStored") in (None, "") and header.get("BitsAllocated") not in (None, ""):
        out.append("BitsStored is missing or empty (assumed equal to BitsAllocated)")
    return out


def fill_pixel_defaults(ds) -> None:
    """Set the defaults of `PIXEL_DEFAULTS` (and BitsStored = BitsAllocated) on a pydicom Dataset in place,
    so that pydicom's decoders accept it. The scanner has already warned about each one."""
    for kw, (default, _meaning) in PIXEL_DEFAULTS.items():
        if ds.get(kw) in (None, ""):
            setattr(ds, kw, default)
    if ds.get("BitsStored") in (None, "") and ds.get("BitsAllocated") not in (None, ""):
        ds.BitsStored = int(ds.BitsAllocated)
    if ds.get("HighBit") in (None, "") and ds.get("BitsStored") not in (None, ""):
        ds.HighBit = int(ds.BitsStored) - 1
