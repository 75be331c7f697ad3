"""``medseg info``, ``medseg convert`` and ``medseg sample``: thin wrappers over :mod:`napari_medseg.io`."""

from __future__ import annotations

import json
import sys
from pathlib import Path


def register(subparsers) -> None:
    p = subparsers.add_parser(
        "info",
        help="list the image series at a path with their geometry",
        description="Print every image series found at PATH (DICOM file/folder/zip, NIfTI, NRRD, MHA): shape, "
        "spacing, origin, direction (LPS, row-major 3x3), orientation code and warnings. Voxels are not read.",
    )
    p.add_argument("path", metavar="PATH")
    p.add_argument("--json", action="store_true", help='print one JSON document {"path": ..., "series": [...]}')
    p.add_argument("--reference", default=None, metavar="DICOM",
                   help="for a DICOM SEG/RTSTRUCT: the image series it belongs to, when it is not beside the file")
    p.set_defaults(func=cmd_info)

    p = subparsers.add_parser(
        "convert",
        help="convert DICOM/NRRD/MHA (or NIfTI) to NIfTI with exact geometry",
        description="Convert one image series to NIfTI (.nii.gz/.nii; .nrrd/.mha also work) keeping its exact "
        "geometry, like dcm2niix. Label volumes that carry class names keep them.",
    )
    p.add_argument("input", metavar="INPUT")
    p.add_argument("-o", "--output", required=True, metavar="OUT.nii.gz")
    p.add_argument(
        "--series", default=None, help="series to convert when INPUT holds several (UID, number or description)"
    )
    p.add_argument("--force", action="store_true", help="overwrite OUT if it exists")
    p.add_argument("--format", default=None, choices=["nifti", "nrrd", "mha", "seg", "rtstruct"],
                   help="output format for labels (default: by OUT's extension; .dcm is DICOM SEG); rtstruct and "
                   "seg need --reference")
    p.add_argument("--reference", default=None, metavar="DICOM",
                   help="the image series (DICOM folder/zip/file) that labels belong to: needed to write SEG/RTSTRUCT "
                   "from NIfTI labels, and to read a SEG/RTSTRUCT whose series is not beside it")
    p.set_defaults(func=cmd_convert)

    p = subparsers.add_parser(
        "sample",
        help="write the synthetic abdomen CT phantom (+ ground-truth labels)",
        description="Write sample data: 'abdomen' (NIfTI image + labels) or 'abdomen-dicom' (DICOM series + labels).",
    )
    p.add_argument("name", metavar="NAME", choices=["abdomen", "abdomen-dicom"])
    p.add_argument("-o", "--output", required=True, metavar="DIR")
    p.add_argument("--seed", type=int, default=0, help="phantom seed (organ sizes, tumours, noise); default 0")
    p.add_argument("--force", action="store_true", help="overwrite existing files")
    p.set_defaults(func=cmd_sample)


# ---------------------------------------------------------------------------------------------- info
def _fmt(values, digits: int = 6) -> str:
    return "  ".join(f"{float(v):.{digits}g}" for v in values)


def _describe(n: int, info) -> list[str]:
    lines = [f"[{n}] {info.label}"]
    if info.uid != info.label:
        lines.append(f"    uid:          {info.uid}")
    n_files = f"{len(info.files)} files" if info.format == "dicom" else ""
    what = ", ".join(x for x in (info.modality, info.format, n_files) if x)
    if what:
        lines.append(f"    kind:         {what}")
    axes = "(c, k, j, i)" if len(info.shape) == 4 else "(k, j, i)"
    lines.append(f"    shape {axes}: {' x '.join(str(s) for s in info.shape)}")
    lines.append(f"    spacing (i, j, k) mm: {_fmt(info.spacing)}")
    lines.append(f"    origin (LPS mm):      {_fmt(info.origin)}")
    d = list(info.direction)
    lines.append("    direction (LPS, row-major 3x3):")
    lines.extend(f"        {_fmt(d[r * 3 : r * 3 + 3], 8)}" for r in range(3))
    lines.append(f"    orientation:  {info.orientation}")
    for w in info.warnings:
        lines.append(f"    warning: {w}")
    return lines


def cmd_info(args) -> int:
    from napari_medseg.io import list_series

    series = list_series(args.path, reference=getattr(args, "reference", None))
    if args.json:
        doc = {"path": str(Path(args.path)), "series": [s.to_json_dict() for s in series]}
        print(json.dumps(doc, indent=2, default=str))
        return 0
    print(f"{args.path}: {len(series)} series")
    for n, info in enumerate(series, start=1):
        print("\n".join(_describe(n, info)))
    return 0


# ---------------------------------------------------------------------------------------------- convert
def cmd_convert(args) -> int:
    import numpy as np

    from napari_medseg.io import read_volume, write_labels, write_volume

    from napari_medseg._guard import check_output_paths

    src, out = Path(args.input), Path(args.output)
    check_output_paths(out, [src])  # never over or into the input, even with --force; writable
    fmt, ref_path = getattr(args, "format", None), getattr(args, "reference", None)
    vol = read_volume(src, series=args.series, reference=ref_path)
    reference = _reference_for(vol, ref_path, fmt, out)
    if fmt in ("seg", "rtstruct") or (vol.meta.get("classes") and np.issubdtype(vol.array.dtype, np.integer)
                                       and not vol.is_4d):
        written = write_labels(vol, out, classes=vol.meta.get("classes"), force=args.force, format=fmt,
                               reference=reference)
    else:
        written = write_volume(vol, out, force=args.force)
    for w in vol.warnings:
        print(f"warning: {w}", file=sys.stderr)
    print(
        f"wrote {written}: shape {vol.shape} (array order), spacing {_fmt(vol.spacing)} mm, "
        f"orientation {vol.orientation_code()}, dtype {vol.array.dtype}"
    )
    return 0


def _reference_for(vol, ref_path, fmt, out):
    """The reference image for a SEG/RTSTRUCT output: --reference, else the one a SEG/RTSTRUCT input was read on."""
    from napari_medseg.errors import InputError
    from napari_medseg.io import read_volume
    from napari_medseg.io.derived import blank_from_record

    dicom_out = fmt in ("seg", "rtstruct") or (fmt is None and out.name.lower().endswith(".dcm"))
    if not dicom_out:
        return None
    if ref_path is not None and vol.meta.get("modality") not in ("SEG", "RTSTRUCT"):
        return read_volume(ref_path)
    if vol.meta.get("reference"):
        return blank_from_record(vol.meta["reference"])
    raise InputError(f"cannot write {out} as {fmt or 'DICOM SEG'}: give the image series the labels belong to "
                     "with --reference DICOM_DIR")


# ---------------------------------------------------------------------------------------------- sample
def cmd_sample(args) -> int:
    from napari_medseg.sample import write_sample

    paths = write_sample(args.name, args.output, force=args.force, seed=args.seed)
    for key, path in paths.items():
        print(f"{key}: {path}")
    return 0
