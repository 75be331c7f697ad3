"""``medseg predict`` and ``medseg demo``: thin layers over `napari_medseg.inference.segment`."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from napari_medseg.errors import InputError, MedsegError, OutputExistsError

LABEL_SUFFIXES = (".nii.gz", ".nii", ".nrrd", ".mha", ".dcm")


def register(sub) -> None:
    p = sub.add_parser(
        "predict",
        help="segment images (files, DICOM folders, folders of cases) with a model",
        description="Segment each INPUT (a NIfTI/NRRD/MHA file, a DICOM folder/zip, or a folder of such cases). "
        "Writes labels as NIfTI (default) or DICOM SEG, a JSON report of the run, and optional statistics.",
    )
    p.add_argument("inputs", nargs="*", metavar="INPUT")
    p.add_argument("--channels", default=None, metavar="A,B,...",
                   help="one case from several images used as the model's input channels, in the model's channel "
                   "order (e.g. t1c.nii.gz,t1.nii.gz,t2.nii.gz,flair.nii.gz); all are resampled onto the first's grid")
    p.add_argument("-o", "--output", required=True, metavar="OUT",
                   help="output folder (one <case>_seg file per case), or a file name for a single input")
    p.add_argument("--model", default=None, help="model name (default), name@version, package path or MONAI bundle")
    p.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    p.add_argument("--overlap", type=float, default=None, help="sliding-window overlap in [0, 1) (default: the model's)")
    p.add_argument("--tta", action="store_true", help="test-time augmentation (average over flips; slower)")
    p.add_argument("--stats", metavar="CSV", default=None, help="write per-class statistics of every case to this CSV")
    p.add_argument("--format", choices=["nifti", "dicom-seg"], default="nifti", dest="fmt")
    p.add_argument("--series", default=None, help="DICOM series to use (UID, number or description) when a path holds several")
    p.add_argument("--report", default=None, metavar="JSON", help="run report path (default: beside the outputs)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.set_defaults(func=run_predict)

    d = sub.add_parser("demo", help="write the sample phantom, segment it, print statistics and Dice vs ground truth")
    d.add_argument("-o", "--output", required=True, metavar="DIR")
    d.add_argument("--model", default=None)
    d.add_argument("--device", default="auto", choices=["auto", "cpu", "cuda"])
    d.add_argument("--force", action="store_true")
    d.add_argument("--quiet", action="store_true")
    d.set_defaults(func=run_demo)


# ---------------------------------------------------------------------------------------------- cases
def _case_name(path: Path) -> str:
    name = path.name
    for suf in (".nii.gz", ".nii", ".nrrd", ".nhdr", ".mha", ".mhd", ".zip", ".dcm"):
        if name.lower().endswith(suf):
            return name[: -len(suf)]
    return name


def find_cases(inputs) -> list[Path]:
    """Expand the inputs: a file or DICOM folder is a case; any other folder contributes its readable entries."""
    from napari_medseg.io import detect_format

    cases: list[Path] = []
    for raw in inputs:
        p = Path(raw)
        if not p.exists():
            cases.append(p)  # reported as a failed case
        elif p.is_file() or detect_format(p) == "dicom":
            cases.append(p)
        else:
            found = [c for c in sorted(p.iterdir()) if not c.name.startswith(".") and detect_format(c) is not None]
            if not found:
                raise InputError(f"{p}: folder holds no readable images or DICOM series")
            cases.extend(found)
    return cases


def _outputs(cases: list[Path], out: Path, fmt: str) -> list[Path]:
    suffix = ".dcm" if fmt == "dicom-seg" else ".nii.gz"
    if out.name.lower().endswith(LABEL_SUFFIXES) and not out.is_dir():
        if len(cases) != 1:
            raise InputError(f"-o {out} is a file name but there are {len(cases)} cases; give a folder")
        return [out]
    names = [_case_name(c) for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    return [out / (f"{n}_{i}_seg{suffix}" if n in dup else f"{n}_seg{suffix}") for i, n in enumerate(names)]


def _versions(device: str) -> dict:
    import monai
    import numpy
    import torch

    from napari_medseg import __version__

    return {"napari_medseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "monai": monai.__version__, "numpy": numpy.__version__, "platform": platform.platform(),
            "device": device, "cuda": torch.cuda.get_device_name(0) if torch.cuda.is_available() else None}


class _Bar:
    """tqdm progress bar (stderr) fed by `Progress` events of one stage."""

    def __init__(self, desc: str, quiet: bool):
        self.desc, self.quiet, self.bar = desc, quiet, None

    def __call__(self, p) -> None:
        if self.quiet or p.stage != "inference":
            return
        if self.bar is None:
            from tqdm import tqdm

            self.bar = tqdm(total=p.total, desc=self.desc, unit="win", file=sys.stderr, leave=False)
        self.bar.n = p.done
        self.bar.refresh()

    def close(self) -> None:
        if self.bar is not None:
            self.bar.close()


def _json_safe(obj):
    if isinstance(obj, dict):
        return {str(k): _json_safe(v) for k, v in obj.items()}
    if isinstance(obj, (list, tuple)):
        return [_json_safe(v) for v in obj]
    if isinstance(obj, float) and obj != obj:
        return None
    return obj


def run_predict(args) -> int:
    from napari_medseg._atomic import atomic_path, check_overwrite
    from napari_medseg.inference import segment
    from napari_medseg.inference.planner import resolve_device
    from napari_medseg.io import read_volume, write_labels
    from napari_medseg.models import load_model

    t_run = time.perf_counter()
    device = resolve_device(args.device)
    channels = [Path(c.strip()) for c in args.channels.split(",") if c.strip()] if getattr(args, "channels", None) else []
    if bool(channels) == bool(args.inputs):
        raise InputError("give the images to segment either as INPUT... or as --channels A,B,... (one multi-channel case)")
    cases = [channels[0]] if channels else find_cases(args.inputs)
    out = Path(args.output)
    outputs = _outputs(cases, out, args.fmt)
    report_path = Path(args.report) if args.report else (
        out.parent / f"{_case_name(out)}_report.json" if outputs == [out] else out / "medseg_predict_report.json")
    if args.stats:
        check_overwrite(args.stats, args.force)
    check_overwrite(report_path, args.force)
    t = time.perf_counter()
    model = load_model(args.model)
    load_s = time.perf_counter() - t
    for w in model.warnings:
        print(f"medseg predict: warning: {w}", file=sys.stderr)
    report = {"command": "predict", "versions": _versions(device), "model": {
        "spec": args.model or "default", "name": model.card.name, "version": model.card.version,
        "path": str(model.path), "sha256": model.card.weights_sha256, "load_seconds": load_s},
        "settings": {"overlap": args.overlap, "tta": args.tta, "format": args.fmt, "series": args.series},
        "cases": []}
    stats_rows, failed = [], 0
    for n, (case, target) in enumerate(zip(cases, outputs), 1):
        entry = {"input": str(case), "output": str(target), "status": "failed"}
        bar = _Bar(f"[{n}/{len(cases)}] {_case_name(case)}", args.quiet)
        try:
            check_overwrite(target, args.force)
            t = time.perf_counter()
            if channels:
                from napari_medseg.inference.channels import stack_channels

                names = model.card.channel_names or [f"channel {c}" for c in range(len(channels))]
                if len(channels) != model.card.in_channels:
                    raise InputError(f"--channels gives {len(channels)} images but model {model.card.name!r} takes "
                                     f"{model.card.in_channels} channels ({', '.join(names)})")
                for name, path in zip(names, channels):
                    print(f"  {name}: {path}")
                volume = stack_channels(channels, names=names, series=args.series)
            else:
                volume = read_volume(case, series=args.series)
            read_s = time.perf_counter() - t
            res = segment(volume, model=model, device=device, overlap=args.overlap, tta=args.tta, progress=bar)
            t = time.perf_counter()
            write_labels(res.labels, target, reference=volume, force=args.force)
            res.timings["read"] = read_s
            res.timings["write"] = time.perf_counter() - t
            entry.update(status="ok", plan=res.plan, timings=res.timings, warnings=res.warnings,
                         stats=res.stats_table(), shape=list(volume.spatial_shape), spacing=list(volume.spacing))
            stats_rows += [{"case": _case_name(case), **row} for row in res.stats_table()]
            present = ", ".join(f"{r['name']} {r['volume_ml']:.1f} mL" for r in res.stats_table() if r["voxels"])
            print(f"{case} -> {target} ({sum(res.timings.values()):.1f} s){': ' + present if present else ''}")
        except (MedsegError, OSError, ValueError, RuntimeError) as e:
            failed += 1
            entry["error"] = f"{type(e).__name__}: {e}"
            print(f"medseg predict: error: {case}: {e}", file=sys.stderr)
            if isinstance(e, OutputExistsError) and len(cases) == 1:
                bar.close()
                raise
        finally:
            bar.close()
        report["cases"].append(entry)
    report["seconds"] = time.perf_counter() - t_run
    report["failed"] = failed
    if args.stats and stats_rows:
        import csv

        from napari_medseg.inference.result import STAT_COLUMNS

        with atomic_path(args.stats, force=args.force) as tmp:
            with open(tmp, "w", newline="", encoding="utf-8") as f:
                w = csv.DictWriter(f, fieldnames=("case", *STAT_COLUMNS), lineterminator="\n")
                w.writeheader()
                for row in stats_rows:
                    w.writerow({k: (f"{v:.4f}" if isinstance(v, float) else v) for k, v in row.items()})
    with atomic_path(report_path, force=args.force) as tmp:
        tmp.write_text(json.dumps(_json_safe(report), indent=2), encoding="utf-8")
    if failed:
        print(f"medseg predict: {failed} of {len(cases)} case(s) failed; see {report_path}", file=sys.stderr)
        return 1
    return 0


def dice_per_class(pred, truth, classes) -> dict[int, float]:
    import numpy as np

    out = {}
    for v in classes:
        if v == 0:
            continue
        a, b = pred == v, truth == v
        s = int(a.sum()) + int(b.sum())
        out[int(v)] = float("nan") if s == 0 else 2.0 * float(np.logical_and(a, b).sum()) / s
    return out


def run_demo(args) -> int:
    from napari_medseg.inference import segment
    from napari_medseg.io import read_volume, write_labels
    from napari_medseg.sample import write_sample

    out = Path(args.output)
    paths = write_sample("abdomen", out, force=args.force)
    image = read_volume(paths["image"])
    truth = read_volume(paths["labels"])
    bar = _Bar("segmenting the phantom", args.quiet)
    try:
        res = segment(image, model=args.model, device=args.device, progress=bar)
    finally:
        bar.close()
    seg_path = write_labels(res.labels, out / "abdomen_seg.nii.gz", reference=image, force=args.force)
    dice = dice_per_class(res.labels.array, truth.array, res.classes)
    print(f"image:  {paths['image']}\ntruth:  {paths['labels']}\nlabels: {seg_path}")
    print(f"model:  {res.model['name']} {res.model['version']} ({res.plan}); {sum(res.timings.values()):.1f} s")
    print(f"{'class':<16}{'voxels':>9}{'mL':>9}{'mean HU':>9}{'Dice':>7}")
    for row in res.stats_table():
        d = dice.get(row["value"], float("nan"))
        print(f"{row['name']:<16}{row['voxels']:>9}{row['volume_ml']:>9.1f}{row['mean_intensity']:>9.1f}"
              f"{'' if d != d else f'{d:7.3f}':>7}")
    for w in res.warnings:
        print(f"warning: {w}", file=sys.stderr)
    return 0
