"""``medseg predict`` and ``medseg demo``: thin layers over `napari_medseg.inference.segment`."""

from __future__ import annotations

import json
import platform
import sys
import time
from pathlib import Path

from napari_medseg.errors import InputError
from napari_medseg.inference.config import add_arguments as add_inference_arguments

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
    add_inference_arguments(p)  # --device, --preset, --overlap, --tta: the InferenceConfig's, defined once
    p.add_argument("--stats", metavar="CSV", default=None, help="write per-class statistics of every case to this CSV")
    p.add_argument("--format", choices=["nifti", "dicom-seg", "rtstruct"], default="nifti", dest="fmt",
                   help="labels format: nifti (default), dicom-seg or rtstruct (both .dcm; DICOM inputs only)")
    p.add_argument("--series", default=None, help="DICOM series to use (UID, number or description) when a path holds several")
    p.add_argument("--report", default=None, metavar="JSON", help="run report path (default: beside the outputs)")
    p.add_argument("--force", action="store_true", help="overwrite existing outputs")
    p.add_argument("--quiet", action="store_true", help="no progress bars")
    p.add_argument("--scheduler", default=None, metavar="ADDRESS",
                   help="run the cases on Dask distributed: local, local:N (N worker processes), local:gpus (one "
                        "worker per GPU, dask-cuda) or tcp://host:port (a running `dask scheduler`); inputs and "
                        "outputs must be on a filesystem the workers share")
    p.add_argument("--resume", action="store_true",
                   help="skip cases whose output exists and was made from the same input, model and settings")
    p.add_argument("--fail-fast", action="store_true", help="stop at the first failed case")
    p.set_defaults(func=run_predict)

    d = sub.add_parser("demo", help="write the sample phantom, segment it, print statistics and Dice vs ground truth")
    d.add_argument("-o", "--output", required=True, metavar="DIR")
    d.add_argument("--model", default=None)
    add_inference_arguments(d, presets=False)
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
    suffix = ".dcm" if fmt in ("dicom-seg", "rtstruct") else ".nii.gz"
    if out.name.lower().endswith(LABEL_SUFFIXES) and not out.is_dir():
        if len(cases) != 1:
            raise InputError(f"-o {out} is a file name but there are {len(cases)} cases; give a folder")
        return [out]
    names = [_case_name(c) for c in cases]
    dup = {n for n in names if names.count(n) > 1}
    return [out / (f"{n}_{i}_seg{suffix}" if n in dup else f"{n}_seg{suffix}") for i, n in enumerate(names)]


def _versions(device: str) -> dict:
    from importlib.metadata import version  # not ``import monai``: that alone takes seconds (all its submodules)

    import numpy
    import torch

    from napari_medseg import __version__

    return {"napari_medseg": __version__, "python": platform.python_version(), "torch": torch.__version__,
            "monai": version("monai"), "numpy": numpy.__version__, "platform": platform.platform(),
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


def _preflight(args, cases, outputs, report_path) -> None:
    """Before any model is loaded: no output over or inside an input, and every output folder writable."""
    from napari_medseg._guard import check_output_paths

    inputs = [*args.inputs, *cases]
    check_output_paths([*outputs, report_path, args.stats], inputs)


def _print_warnings(case, warnings) -> None:
    """Each warning of a case once, on stderr (they are also in the JSON report)."""
    for w in dict.fromkeys(str(w) for w in warnings):
        print(f"medseg predict: warning: {case}: {w}", file=sys.stderr)


def run_predict(args) -> int:
    from napari_medseg._atomic import atomic_path, check_overwrite
    from napari_medseg.cohort import connect, predict_cohort
    from napari_medseg.inference.config import from_arguments
    from napari_medseg.inference.planner import resolve_device
    from napari_medseg.models import load_model

    t_run = time.perf_counter()
    device = resolve_device(args.device)
    config = from_arguments(args).replace(device=device)  # bad values: a clear error before any work
    channels = [Path(c.strip()) for c in args.channels.split(",") if c.strip()] if getattr(args, "channels", None) else []
    if bool(channels) == bool(args.inputs):
        raise InputError("give the images to segment either as INPUT... or as --channels A,B,... (one multi-channel case)")
    cases = [channels[0]] if channels else find_cases(args.inputs)
    out = Path(args.output)
    outputs = _outputs(cases, out, args.fmt)
    single = outputs == [out]
    report_path = Path(args.report) if args.report else (
        out.parent / f"{_case_name(out)}_report.json" if single else out / "medseg_predict_report.json")
    _preflight(args, [*cases, *channels], outputs, report_path)
    if args.stats:
        check_overwrite(args.stats, args.force)
    check_overwrite(report_path, args.force or args.resume)
    if single and not (args.force or args.resume):
        check_overwrite(out, False)  # one case: an existing output is the command's error, not a failed case
    t = time.perf_counter()
    model = load_model(args.model, lazy=True)
    load_s = time.perf_counter() - t
    for w in model.warnings:
        print(f"medseg predict: warning: {w}", file=sys.stderr)
    settings = {"format": args.fmt, "series": args.series}  # the case's; the inference settings are `config`
    if channels:  # one case, several images as the model's input channels (in the card's channel order)
        names = model.card.channel_names or [f"channel {c}" for c in range(len(channels))]
        if len(channels) != model.card.in_channels:
            raise InputError(f"--channels gives {len(channels)} images but model {model.card.name!r} takes "
                             f"{model.card.in_channels} channels ({', '.join(names)})")
        for name, path in zip(names, channels):
            print(f"  {name}: {path}")
        settings["channel_names"] = list(names)
        cases = [channels]
    report = {"command": "predict", "versions": _versions(device), "model": {
        "spec": args.model or "default", "name": model.card.name, "version": model.card.version,
        "path": str(model.path), "sha256": model.card.weights_sha256, "load_seconds": load_s},
        "settings": {"overlap": config.overlap, "tta": config.tta, "preset": config.preset_name,
                     "format": args.fmt, "series": args.series}}
    client = connect(args.scheduler) if args.scheduler else None
    bar = None
    try:
        if client is not None:
            print(f"medseg predict: Dask scheduler {client.scheduler.address}, "
                  f"{len(client.scheduler_info().get('workers', {}))} worker(s); dashboard {client.dashboard_link}",
                  file=sys.stderr)
            if not args.quiet:
                from tqdm import tqdm

                bar = tqdm(total=len(cases), desc="cases", unit="case", file=sys.stderr)
        # workers load the model themselves, from the same package (never shipped through the scheduler)
        spec = (str(model.path) if model.path else args.model) if client is not None else model

        def on_case(entry):
            _print_case(entry)
            _print_warnings(entry["input"], [w for w in entry.get("warnings", []) if w not in model.warnings])
            if bar is not None:
                bar.update(1)

        def window_bar(n, case):  # per-window progress of a case run in this process
            first = case[0] if isinstance(case, list) else case  # a multi-channel case is named by its first image
            return _Bar(f"[{n}/{len(cases)}] {_case_name(first)}", args.quiet)

        cohort = predict_cohort(cases, outputs, model=spec, settings=settings, config=config, client=client, resume=args.resume,
                                force=args.force, fail_fast=args.fail_fast, on_case=on_case, records=not single or args.resume,
                                progress=window_bar if client is None else None)
    finally:
        if bar is not None:
            bar.close()
        if client is not None:
            client.close()
    report.update(cases=cohort["cases"], scheduler=cohort["scheduler"], skipped=cohort["skipped"])
    report["seconds"] = time.perf_counter() - t_run
    report["failed"] = failed = cohort["failed"]
    stats_rows = [{"case": _case_name(Path(e["input"])), **row} for e in cohort["cases"] for row in e.get("stats", [])]
    if args.stats and stats_rows:
        from napari_medseg.inference.result import STAT_COLUMNS, stats_csv

        with atomic_path(args.stats, force=args.force) as tmp:
            tmp.write_text(stats_csv(stats_rows, ("case", *STAT_COLUMNS)), encoding="utf-8")
    with atomic_path(report_path, force=args.force or args.resume) as tmp:
        tmp.write_text(json.dumps(_json_safe(report), indent=2), encoding="utf-8")
    if failed:
        print(f"medseg predict: {failed} of {len(cases)} case(s) failed; see {report_path}", file=sys.stderr)
        return 1
    return 0


def _print_case(entry: dict) -> None:
    if entry["status"] == "ok":
        rows = entry.get("stats", [])
        present = ", ".join(f"{r['name']} {r['volume_ml']:.1f} mL" for r in rows if r["voxels"])
        print(f"{entry['input']} -> {entry['output']} ({sum(entry['timings'].values()):.1f} s)"
              f"{': ' + present if present else ''}")
    elif entry["status"] == "skipped":
        print(f"{entry['input']}: skipped, {entry.get('reason', '')}")
    else:
        print(f"medseg predict: error: {entry['input']}: {entry.get('error', 'failed')}", file=sys.stderr)


def dice_per_class(pred, truth, classes) -> dict[int, float]:
    from napari_medseg.metrics import dice_per_class as dice

    return dice(pred, truth, classes, absent=float("nan"))


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
