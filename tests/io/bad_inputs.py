"""A corpus of broken and hostile NIfTI / NRRD / MHA files, made at test time (imported by the tests).

Each generator writes one file (plus a detached data file where needed) and returns its path; `CORPUS` maps a
case name to ``(generator, must_fail)``: ``must_fail`` cases have to give a `MedsegError` (a reader that
accepted them would return wrong voxels), the others may also give a valid `Volume`. The classes covered:
damaged compression (CRC, payload bytes, truncation), short raw payloads, headers declaring more data than
the file or memory can hold, empty/negative/absurd sizes, non-finite or degenerate geometry, unknown types,
offsets outside the file, detached data files that are missing, devices or escape the folder.
"""

from __future__ import annotations

import gzip
import struct
import zlib
from pathlib import Path

import numpy as np

SHAPE = (6, 7, 8)  # i, j, k


def voxels(dtype=np.int16) -> np.ndarray:
    """Deterministic, poorly compressible voxels in NIfTI order [i, j, k]."""
    rng = np.random.default_rng(7)
    return rng.integers(-1000, 1000, SHAPE).astype(dtype)


# ---------------------------------------------------------------------------------------------- NIfTI
def nifti_bytes(arr=None, **fields) -> bytes:
    """An uncompressed single-file NIfTI-1 (header fields overridable by name) as bytes."""
    import nibabel as nib

    arr = voxels() if arr is None else arr
    img = nib.Nifti1Image(arr, np.diag([0.8, 0.9, 2.5, 1.0]))
    img.header.set_sform(img.affine, code=1)
    img.header.set_qform(img.affine, code=1)
    img.header["vox_offset"] = 352
    data = bytearray(img.header.binaryblock) + b"\x00" * 4
    data += arr.tobytes(order="F")
    return patch_nifti(bytes(data), **fields)


_NIFTI_FIELDS = {  # name: (offset, struct format)
    "sizeof_hdr": (0, "<i"), "dim": (40, "<8h"), "datatype": (70, "<h"), "bitpix": (72, "<h"),
    "pixdim": (76, "<8f"), "vox_offset": (108, "<f"), "scl_slope": (112, "<f"), "scl_inter": (116, "<f"),
    "qform_code": (252, "<h"), "sform_code": (254, "<h"), "quatern": (256, "<6f"), "srow": (280, "<12f"),
    "magic": (344, "4s"),
}


def patch_nifti(data: bytes, **fields) -> bytes:
    out = bytearray(data)
    for name, value in fields.items():
        off, fmt = _NIFTI_FIELDS[name]
        vals = value if isinstance(value, (list, tuple)) else [value]
        struct.pack_into(fmt, out, off, *vals)
    return bytes(out)


def write(path: Path, data: bytes) -> Path:
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(data)
    return path


def gz(data: bytes) -> bytes:
    return gzip.compress(data, mtime=0)


def flip_byte(data: bytes, at: int, mask: int = 0x5A) -> bytes:
    out = bytearray(data)
    out[at] ^= mask
    return bytes(out)


# ---------------------------------------------------------------------------------------------- NRRD / MHA
def nrrd_bytes(payload=None, encoding="raw", **fields) -> bytes:
    arr = voxels()
    raw = arr.tobytes(order="F") if payload is None else payload
    head = {"type": "short", "dimension": "3", "sizes": " ".join(map(str, SHAPE)), "endian": "little",
            "space": "left-posterior-superior", "space directions": "(0.8,0,0) (0,0.9,0) (0,0,2.5)",
            "space origin": "(1,2,3)", "encoding": encoding}
    head.update({k.replace("_", " "): v for k, v in fields.items()})
    text = "NRRD0004\n" + "".join(f"{k}: {v}\n" for k, v in head.items() if v is not None) + "\n"
    body = raw if encoding == "raw" or payload is not None else gz(raw)
    return text.encode() + body


def mha_bytes(payload=None, compressed=False, **fields) -> bytes:
    arr = voxels()
    raw = arr.tobytes(order="F") if payload is None else payload
    head = {"ObjectType": "Image", "NDims": "3", "BinaryData": "True", "BinaryDataByteOrderMSB": "False",
            "CompressedData": "True" if compressed else "False", "TransformMatrix": "1 0 0 0 1 0 0 0 1",
            "Offset": "1 2 3", "ElementSpacing": "0.8 0.9 2.5", "DimSize": " ".join(map(str, SHAPE)),
            "ElementType": "MET_SHORT"}
    head.update(fields)
    data_file = head.pop("ElementDataFile", "LOCAL")
    body = zlib.compress(raw) if compressed and payload is None else raw
    if compressed and "CompressedDataSize" not in head:
        head["CompressedDataSize"] = str(len(body))
    text = "".join(f"{k} = {v}\n" for k, v in head.items() if v is not None) + f"ElementDataFile = {data_file}\n"
    return text.encode() + body


def _nrrd_gz_crc(d: Path) -> Path:  # the stored CRC-32 no longer matches: ITK never looks
    data = nrrd_bytes(encoding="gzip")
    return write(d / "crc.nrrd", flip_byte(data, len(data) - 6))


def _nrrd_gz_payload(d: Path) -> Path:  # one compressed byte changed: deflate may still decode (wrong voxels)
    data = nrrd_bytes(encoding="gzip")
    head = data.index(b"\n\n") + 2
    return write(d / "payload.nrrd", flip_byte(data, head + (len(data) - head) // 2, 0x01))


def _mha_zlib_payload(d: Path) -> Path:
    data = mha_bytes(compressed=True)
    head = data.index(b"ElementDataFile = LOCAL\n") + len(b"ElementDataFile = LOCAL\n")
    return write(d / "payload.mha", flip_byte(data, head + (len(data) - head) // 2, 0x01))


def _mha_zlib_adler(d: Path) -> Path:
    data = mha_bytes(compressed=True)
    return write(d / "adler.mha", flip_byte(data, len(data) - 2))


def _detached(d: Path, ref: str, name: str = "det.nhdr") -> Path:
    text = nrrd_bytes().split(b"\n\n", 1)[0].decode() + f"\ndata file: {ref}\n"
    return write(d / name, text.encode())


CORPUS = {
    # --- damaged compression / truncation: must be refused (else wrong voxels)
    "nifti_gz_crc": (lambda d: write(d / "crc.nii.gz", flip_byte(gz(nifti_bytes()), -6)), True),
    "nifti_gz_truncated": (lambda d: write(d / "trunc.nii.gz", gz(nifti_bytes())[:-300]), True),
    "nifti_truncated": (lambda d: write(d / "trunc.nii", nifti_bytes()[:-100]), True),
    "nrrd_gz_crc": (_nrrd_gz_crc, True),
    "nrrd_gz_payload": (_nrrd_gz_payload, True),
    "nrrd_gz_truncated": (lambda d: write(d / "trunc_gz.nrrd", nrrd_bytes(encoding="gzip")[:-200]), True),
    "nrrd_raw_truncated": (lambda d: write(d / "trunc.nrrd", nrrd_bytes()[:-50]), True),
    "mha_zlib_payload": (_mha_zlib_payload, True),
    "mha_zlib_adler": (_mha_zlib_adler, True),
    "mha_zlib_truncated": (lambda d: write(d / "trunc_z.mha", mha_bytes(compressed=True)[:-100]), True),
    "mha_raw_truncated": (lambda d: write(d / "trunc.mha", mha_bytes()[:-50]), True),
    # --- declared sizes beyond the file or memory
    "nifti_huge_dims": (lambda d: write(d / "huge.nii.gz", gz(nifti_bytes(dim=[3, 2048, 2048, 2048, 1, 1, 1, 1]))), True),
    "nifti_huge_dims_raw": (lambda d: write(d / "huge.nii", nifti_bytes(dim=[3, 30000, 30000, 30000, 1, 1, 1, 1])), True),
    "nrrd_huge_sizes": (lambda d: write(d / "huge.nrrd", nrrd_bytes(sizes="100000 100000 100000")), True),
    "mha_huge_sizes": (lambda d: write(d / "huge.mha", mha_bytes(DimSize="100000 100000 100000")), True),
    "mha_huge_channels": (lambda d: write(d / "chan.mha", mha_bytes(ElementNumberOfChannels="1000000")), True),
    # --- empty / negative / absurd sizes and types
    "nifti_zero_dim": (lambda d: write(d / "zero.nii", nifti_bytes(dim=[3, 0, 7, 8, 1, 1, 1, 1])), True),
    "nifti_negative_dim": (lambda d: write(d / "neg.nii", nifti_bytes(dim=[3, -6, 7, 8, 1, 1, 1, 1])), True),
    "nifti_dim0_9": (lambda d: write(d / "d9.nii", nifti_bytes(dim=[9, 6, 7, 8, 1, 1, 1, 1])), True),
    "nifti_bad_datatype": (lambda d: write(d / "dt.nii", nifti_bytes(datatype=999)), True),
    "nifti_bad_magic": (lambda d: write(d / "magic.nii", nifti_bytes(magic=b"xx1\x00")), True),
    "nifti_offset_past_end": (lambda d: write(d / "off.nii", nifti_bytes(vox_offset=1e9)), True),
    "nifti_offset_nan": (lambda d: write(d / "offnan.nii", nifti_bytes(vox_offset=float("nan"))), False),
    "nifti_offset_negative": (lambda d: write(d / "offneg.nii", nifti_bytes(vox_offset=-352.0)), False),
    "nrrd_zero_size": (lambda d: write(d / "zero.nrrd", nrrd_bytes(sizes="0 7 8")), True),
    "nrrd_negative_size": (lambda d: write(d / "negs.nrrd", nrrd_bytes(sizes="-6 7 8")), True),
    "nrrd_bad_type": (lambda d: write(d / "type.nrrd", nrrd_bytes(type="quaternion")), True),
    "nrrd_dimension_12": (lambda d: write(d / "dim.nrrd", nrrd_bytes(dimension="12")), True),
    "mha_bad_type": (lambda d: write(d / "type.mha", mha_bytes(ElementType="MET_NOPE")), True),
    "mha_ndims_0": (lambda d: write(d / "nd0.mha", mha_bytes(NDims="0")), True),
    # ITK's MetaIO spins forever on this header (found by the fuzzer) ...
    "mha_ndims_negative": (lambda d: write(d / "ndneg.mha", mha_bytes(NDims="-1", DimSize="")), True),
    # ... and crashes the process on this one (detached, inconsistent counts)
    "mhd_inconsistent_counts": (lambda d: write(d / "bad.mhd", mha_bytes(
        NDims="-1", TransformMatrix="1 0 0 1", Offset="-inf -1.9 999999.0", ElementSpacing="0.0 0.0 -1.0", DimSize="",
        ElementType="MET_ULONG_LONG", HeaderSize="10", CompressedDataSize="999999999", ElementNumberOfChannels="0",
        ElementDataFile="bad.raw")) and write(d / "bad.raw", b"\x00" * 64) and d / "bad.mhd", True),
    "mha_dimsize_count": (lambda d: write(d / "dimc.mha", mha_bytes(DimSize="6 7")), True),
    "mha_channels_zero": (lambda d: write(d / "ch0.mha", mha_bytes(ElementNumberOfChannels="0")), True),
    "nrrd_sizes_count": (lambda d: write(d / "sc.nrrd", nrrd_bytes(sizes="6 7")), True),
    # --- non-finite or degenerate geometry
    "nifti_pixdim_nan": (lambda d: write(d / "pixnan.nii", nifti_bytes(pixdim=[1, float("nan"), 1, 1, 1, 0, 0, 0], sform_code=0, qform_code=0)), False),
    "nifti_pixdim_zero": (lambda d: write(d / "pix0.nii", nifti_bytes(pixdim=[1, 0, 0, 0, 1, 0, 0, 0], sform_code=0, qform_code=0)), False),
    "nifti_sform_nan": (lambda d: write(d / "snan.nii", nifti_bytes(srow=[float("nan")] * 12, qform_code=0)), True),
    "nifti_sform_singular": (lambda d: write(d / "ssing.nii", nifti_bytes(srow=[0.0] * 12, qform_code=0)), True),
    "nifti_sform_sheared": (lambda d: write(d / "shear.nii", nifti_bytes(srow=[1, 0.5, 0, 0, 0, 1, 0, 0, 0, 0, 1, 0], qform_code=0)), True),
    "nifti_quatern_inf": (lambda d: write(d / "qinf.nii", nifti_bytes(quatern=[float("inf")] * 6, sform_code=0)), False),
    "nrrd_spacing_nan": (lambda d: write(d / "spnan.nrrd", nrrd_bytes(space_directions="(nan,0,0) (0,0.9,0) (0,0,2.5)")), True),
    "nrrd_directions_degenerate": (lambda d: write(d / "degen.nrrd", nrrd_bytes(space_directions="(1,0,0) (1,0,0) (0,0,2.5)")), True),
    "nrrd_origin_inf": (lambda d: write(d / "oinf.nrrd", nrrd_bytes(space_origin="(inf,0,0)")), True),
    "mha_spacing_zero": (lambda d: write(d / "sp0.mha", mha_bytes(ElementSpacing="0 0.9 2.5")), True),
    "mha_transform_nan": (lambda d: write(d / "tnan.mha", mha_bytes(TransformMatrix="nan 0 0 0 1 0 0 0 1")), True),
    "mha_transform_sheared": (lambda d: write(d / "tshear.mha", mha_bytes(TransformMatrix="1 0.5 0 0 1 0 0 0 1")), True),
    # --- detached data files
    "nhdr_missing_data": (lambda d: _detached(d, "nowhere.raw"), True),
    "nhdr_device": (lambda d: _detached(d, "/dev/zero"), True),
    "nhdr_escape": (lambda d: _detached(d, "../../../../../../etc/hostname"), True),
    "mhd_missing_data": (lambda d: write(d / "m.mhd", mha_bytes(ElementDataFile="nowhere.raw").split(b"ElementDataFile = nowhere.raw\n")[0] + b"ElementDataFile = nowhere.raw\n"), True),
    # --- not what the name says
    "nifti_empty": (lambda d: write(d / "empty.nii.gz", b""), True),
    "nrrd_garbage": (lambda d: write(d / "garbage.nrrd", b"\x00\xff" * 100), True),
    "mha_text_only": (lambda d: write(d / "text.mha", b"hello\n"), True),
}
