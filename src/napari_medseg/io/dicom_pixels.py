"""Pixel data of a DICOM series: decoding, rescaling and gantry-tilt resampling into one ``[k, j, i]`` array.

Each file is read once, in a thread pool, straight into a preallocated array. Uncompressed little-endian
files whose pixel data is the last element are read without parsing the header again; compressed
transfer syntaxes go through pydicom's pixel handlers (pylibjpeg, pyjpegls).
"""

from __future__ import annotations

import os
from concurrent.futures import ThreadPoolExecutor

import numpy as np

from napari_medseg.errors import InputError
from napari_medseg.io.dicom_classify import fill_pixel_defaults
from napari_medseg.io.dicom_scan import NATIVE_SYNTAXES, Source, length_matches, memory_budget, mismatch_reason, read_header
from napari_medseg.io.series import SeriesInfo

_WORKERS = min(8, (os.cpu_count() or 2) * 2)

def _native_frames(ds, key: str) -> np.ndarray:
    """Stored values of an uncompressed little-endian dataset as (frames, rows, cols), without copying."""
    bits = int(ds.BitsAllocated)
    signed = int(ds.get("PixelRepresentation", 0)) == 1
    if bits not in (8, 16, 32) or int(ds.get("SamplesPerPixel", 1)) != 1:
        return np.asarray(ds.pixel_array)
    dtype = np.dtype(f"{'i' if signed else 'u'}{bits // 8}").newbyteorder("<")
    rows, cols = int(ds.Rows), int(ds.Columns)
    n = int(ds.get("NumberOfFrames", 1) or 1)
    need = rows * cols * n
    if not length_matches(ds, len(ds.PixelData), need * dtype.itemsize):
        raise InputError(f"{key}: {mismatch_reason(ds, len(ds.PixelData))}")
    arr = np.frombuffer(ds.PixelData, dtype=dtype, count=need)
    stored = int(ds.get("BitsStored", bits) or bits)
    if signed and stored < bits:  # sign-extend from BitsStored
        shift = bits - stored
        arr = (arr << shift) >> shift
    return arr.reshape(n, rows, cols)


#: Faster decoder per transfer syntax when several are installed (pyjpegls decodes JPEG-LS ~4x faster
#: than pylibjpeg-libjpeg, which pydicom would otherwise try first).
_PREFERRED_PLUGIN = {"1.2.840.10008.1.2.4.80": "pyjpegls", "1.2.840.10008.1.2.4.81": "pyjpegls"}


def _decode_compressed(ds, tsyntax: str) -> np.ndarray:
    plugin = _PREFERRED_PLUGIN.get(tsyntax)
    if plugin:
        from pydicom.pixels import pixel_array

        try:
            return np.asarray(pixel_array(ds, decoding_plugin=plugin))
        except Exception:  # noqa: BLE001 - plugin missing or failing: let pydicom choose
            pass
    return np.asarray(ds.pixel_array)


def _decode(ds, key: str) -> np.ndarray:
    if "PixelData" not in ds:
        if "FloatPixelData" in ds or "DoubleFloatPixelData" in ds:
            arr = np.asarray(ds.pixel_array, dtype=np.float32)
            if not np.all(np.isfinite(arr)):
                raise InputError(
                    f"{key}: float pixel data contains {int((~np.isfinite(arr)).sum())} NaN/inf value(s); "
                    "fix the file (e.g. replace them with a background value) and read it again"
                )
            return arr.reshape((-1,) + arr.shape[-2:])
        raise InputError(
            f"{key}: the file has no pixel data (a header-only or non-image object, or a file truncated in its "
            "pixel data); remove it from the folder, re-export the series, or choose another series"
        )
    fill_pixel_defaults(ds)
    if int(ds.get("SamplesPerPixel", 1) or 1) != 1:
        raise InputError(
            f"{key}: colour images (SamplesPerPixel={ds.SamplesPerPixel}) are not supported for segmentation; "
            "convert the series to greyscale"
        )
    tsyntax = str(ds.file_meta.TransferSyntaxUID) if "TransferSyntaxUID" in getattr(ds, "file_meta", {}) else ""
    try:
        if tsyntax in NATIVE_SYNTAXES and tsyntax != "1.2.840.10008.1.2.2":
            return _native_frames(ds, key)
        arr = _decode_compressed(ds, tsyntax)
    except InputError:
        raise
    except Exception as e:  # noqa: BLE001 - decoder errors of all kinds
        raise InputError(
            f"{key}: cannot decode the pixel data (transfer syntax {tsyntax or 'unknown'}): {e}. The file may be "
            "truncated, or needs a decoder that is not installed (pylibjpeg-libjpeg/-openjpeg/-rle, pyjpegls "
            "or python-gdcm)"
        ) from e
    return arr.reshape((-1,) + arr.shape[-2:])


_IMPLICIT, _EXPLICIT = "1.2.840.10008.1.2", "1.2.840.10008.1.2.1"


def _fast_native(source: Source, key: str, f) -> np.ndarray | None:
    """Stored values of an uncompressed little-endian file without parsing its header again.

    The pixel data of such files is (almost always) the last element: when the bytes just before the last
    Rows x Columns x Frames x BitsAllocated/8 bytes are exactly the (7FE0,0010) element header with that
    length, the values are taken from there. Anything else returns None and the file is parsed normally.
    """
    info = f.info
    bits = info["bits_allocated"]
    if info["transfer_syntax"] not in (_IMPLICIT, _EXPLICIT) or bits not in (8, 16, 32) or info["samples"] != 1:
        return None
    length = f.rows * f.columns * f.n_frames * bits // 8
    if length % 2 or length >= 2**32 - 1:
        return None
    fp = source.open(key)
    if isinstance(fp, str):
        with open(fp, "rb") as fh:
            data = fh.read()
    else:
        data = fp.getvalue()
    tag = b"\xe0\x7f\x10\x00"
    if info["transfer_syntax"] == _EXPLICIT:
        head = data[-length - 12 : -length] if len(data) >= length + 12 else b""
        ok = head[:4] == tag and head[4:6] in (b"OW", b"OB") and head[8:] == length.to_bytes(4, "little")
    else:
        head = data[-length - 8 : -length] if len(data) >= length + 8 else b""
        ok = head[:4] == tag and head[4:] == length.to_bytes(4, "little")
    if not ok:
        return None
    dtype = np.dtype(f"{'i' if info['signed'] else 'u'}{bits // 8}").newbyteorder("<")
    arr = np.frombuffer(data, dtype=dtype, offset=len(data) - length)
    stored = info["bits_stored"] or bits
    if info["signed"] and stored < bits:  # sign-extend from BitsStored
        shift = bits - stored
        arr = (arr << shift) >> shift
    return arr.reshape(f.n_frames, f.rows, f.columns)


def _read_file(source: Source, key: str, frame=None) -> tuple[str, np.ndarray]:
    if frame is not None:
        arr = _fast_native(source, key, frame)
        if arr is not None:
            return key, arr
    try:
        ds = read_header(source.open(key), stop_before_pixels=False)
    except InputError:
        raise
    except PermissionError as e:
        raise InputError(f"{key}: permission denied; make the file readable (chmod +r) and try again") from e
    except Exception as e:  # noqa: BLE001
        raise InputError(f"{key}: cannot read the file ({e}); remove it or re-export the series") from e
    return key, _decode(ds, key)


def _output_dtype(lo: float, hi: float, slopes: np.ndarray, inters: np.ndarray) -> np.dtype:
    """int16 (else int32) when every slope/intercept is integral and the rescaled range fits; else float32."""
    integral = bool(np.all(slopes == np.round(slopes)) and np.all(inters == np.round(inters)))
    if not integral:
        return np.dtype(np.float32)
    ends = np.concatenate([lo * slopes + inters, hi * slopes + inters])
    for dt in (np.int16, np.int32):
        info = np.iinfo(dt)
        if info.min <= ends.min() and ends.max() <= info.max:
            return np.dtype(dt)
    return np.dtype(np.float32)


def _output_range(lo, hi, slopes, inters) -> tuple[float, float]:
    ends = np.concatenate([lo * slopes + inters, hi * slopes + inters])
    return float(ends.min()), float(ends.max())


def _declared_range(f) -> tuple[float, float]:
    """Range of stored values BitsStored/PixelRepresentation allow (a first guess of the output dtype)."""
    bits = max(1, min(int(f.info.get("bits_stored") or f.info["bits_allocated"]), 32))
    if f.info.get("signed"):
        return -(2.0 ** (bits - 1)), 2.0 ** (bits - 1) - 1
    return 0.0, 2.0**bits - 1


def _check_rescale(frames) -> tuple[np.ndarray, np.ndarray]:
    slopes = np.array([f.slope for f in frames], float)
    inters = np.array([f.intercept for f in frames], float)
    if not (np.all(np.isfinite(slopes)) and np.all(np.isfinite(inters))):
        bad = next(f for f in frames if not (np.isfinite(f.slope) and np.isfinite(f.intercept)))
        raise InputError(
            f"{bad.key}: RescaleSlope/RescaleIntercept is NaN, infinite or unreadable "
            f"({bad.slope}, {bad.intercept}); fix the header and read the series again"
        )
    return slopes, inters


def read_pixels(info: SeriesInfo, source: Source, out_dtype=None) -> tuple[np.ndarray, dict]:
    """Read, decode and rescale every frame straight into a preallocated ``[k, j, i]`` array.

    Each file is read once, in a thread pool; the output dtype is chosen up front from BitsStored and the
    rescale values, and widened (one re-read) in the rare case where stored values exceed BitsStored.
    """
    frames = info.extra["frames"]
    n, rows, cols = len(frames), frames[0].rows, frames[0].columns
    budget = memory_budget()
    if n * rows * cols * 4 > budget:
        raise InputError(
            f"{frames[0].key}: series {info.uid} declares {n} x {rows} x {cols} voxels "
            f"({n * rows * cols * 4 / 1024**3:.1f} GiB as float32), more than the {budget / 1024**3:.1f} GiB "
            "this machine can hold now; the headers are corrupt or the series is too large to load"
        )
    slopes, inters = _check_rescale(frames)
    lo, hi = _declared_range(frames[0])
    dtype = np.dtype(out_dtype) if out_dtype is not None else _output_dtype(lo, hi, slopes, inters)
    out = np.empty((n, rows, cols), dtype=dtype)
    index: dict[str, list[tuple[int, int]]] = {}
    for k, f in enumerate(frames):
        index.setdefault(f.key, []).append((k, f.frame or 0))

    first_frame = {}
    for f in frames:
        first_frame.setdefault(f.key, f)

    def work(key: str):
        key, arr = _read_file(source, key, first_frame[key])
        if arr.shape[-2:] != (rows, cols):
            raise InputError(f"{key}: pixel data is {arr.shape[-2:]} but the header says {rows} x {cols}; corrupt file")
        lo_hi = []
        for k, fr in index[key]:
            if fr >= arr.shape[0]:
                raise InputError(f"{key}: frame {fr + 1} is missing from the pixel data; the file is truncated")
            a = arr[fr]
            if a.dtype.kind == "f" and not np.all(np.isfinite(a)):
                raise InputError(f"{key}: pixel data contains NaN/inf values; fix the file and read it again")
            lo_hi.append((float(a.min()), float(a.max())))
            s, b = slopes[k], inters[k]
            if s == 1 and b == 0:
                np.copyto(out[k], a, casting="unsafe")
            elif dtype.kind == "f":
                np.multiply(a, np.float32(s), out=out[k], casting="unsafe")
                out[k] += np.float32(b)
            elif s == 1:
                np.add(a, np.int32(b), out=out[k], casting="unsafe")
            else:
                np.copyto(out[k], a.astype(np.int64) * int(s) + int(b), casting="unsafe")
        return arr.dtype, lo_hi

    keys = list(index)
    workers = max(1, min(_WORKERS, len(keys)))
    if workers == 1:
        results = [work(k) for k in keys]
    else:
        with ThreadPoolExecutor(workers) as pool:
            results = list(pool.map(work, keys))
    stored_dtype = results[0][0]
    ranges = np.array([r for _, lh in results for r in lh])
    s_lo, s_hi = float(ranges[:, 0].min()), float(ranges[:, 1].max())
    r_lo, r_hi = _output_range(s_lo, s_hi, slopes, inters)
    if out.dtype.kind == "f" and max(abs(r_lo), abs(r_hi)) > np.finfo(np.float32).max:
        k = int(np.argmax(np.abs(slopes) * max(abs(s_lo), abs(s_hi)) + np.abs(inters)))
        raise InputError(
            f"{frames[k].key}: RescaleSlope {slopes[k]:g} / RescaleIntercept {inters[k]:g} turn the stored values "
            f"({s_lo:g} to {s_hi:g}) into numbers beyond the float32 range; the header is corrupt — fix it"
        )
    if out_dtype is None and (s_lo < lo or s_hi > hi):
        needed = _output_dtype(s_lo, s_hi, slopes, inters)
        if needed != dtype and np.result_type(needed, dtype) != dtype:
            return read_pixels(info, source, out_dtype=np.result_type(needed, dtype))
    if out.dtype == np.int32 and out_dtype is None:  # declared range was wide; the values may fit int16
        r_lo, r_hi = _output_range(s_lo, s_hi, slopes, inters)
        if -(2**15) <= r_lo and r_hi < 2**15:
            out = out.astype(np.int16)
    uniform = bool(np.all(slopes == slopes[0]) and np.all(inters == inters[0]))
    meta = {"original_dtype": str(stored_dtype), "rescale": (float(slopes[0]), float(inters[0])) if uniform else None}
    if not uniform:
        meta["rescale_per_slice"] = [(float(s), float(i)) for s, i in zip(slopes, inters)]
    return out, meta


def resample_tilt(data: np.ndarray, shifts: np.ndarray) -> np.ndarray:
    """Shift each slice in-plane by (i, j) pixels so the sheared stack lands on an orthogonal grid."""
    from scipy import ndimage

    fill = float(data.min())
    snapped = np.round(shifts)
    shifts = np.where(np.abs(shifts - snapped) < 1e-3, snapped, shifts)  # exact copies for whole-pixel drifts
    out = np.empty(data.shape, dtype=np.float32)
    for k in range(data.shape[0]):
        # slice k's content sits shifts[k] pixels away from the grid column through the origin
        ndimage.shift(
            data[k].astype(np.float32), (shifts[k, 1], shifts[k, 0]), output=out[k], order=1, mode="grid-constant",
            cval=fill,
        )  # fmt: skip
    if data.dtype.kind in "iu":
        return np.round(out).astype(data.dtype)
    return out
