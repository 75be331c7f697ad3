"""``medseg plan`` (the measured CPU plan of a model: its candidate table) and ``medseg export`` (ONNX/OpenVINO)."""

from __future__ import annotations

import json


def register(sub) -> None:
    p = sub.add_parser("plan", help="show (and on first use measure) the CPU plan of a model on this machine",
                       description="Times the candidate runtimes (PyTorch, OpenVINO, ONNX Runtime), batch sizes, "
                       "memory formats and precisions on a few windows, caches the best plan and prints the table. "
                       "With IMAGE, the windows come from that image's model grid.")
    p.add_argument("model", metavar="MODEL", help="model name, name@version, package path or MONAI bundle")
    p.add_argument("image", nargs="?", default=None, metavar="IMAGE", help="an image to calibrate on (optional)")
    p.add_argument("--recalibrate", action="store_true", help="measure again even if a cached plan exists")
    p.add_argument("--sw-batch-size", type=int, default=None, help="fix the batch size")
    p.add_argument("--json", action="store_true", help="print the plan as JSON")
    p.set_defaults(func=run_plan)

    e = sub.add_parser("export", help="export a model's network to ONNX or OpenVINO IR with a JSON preprocessing sidecar",
                       description="Writes FILE.onnx (or FILE.xml + FILE.bin) and FILE.json (orientation, spacing, "
                       "intensity, ROI, classes); the export is checked against PyTorch before it is written.")
    e.add_argument("model", metavar="MODEL")
    e.add_argument("-o", "--output", required=True, metavar="FILE")
    e.add_argument("--format", choices=["onnx", "openvino"], default="onnx", dest="fmt")
    e.add_argument("--force", action="store_true", help="overwrite existing files")
    e.set_defaults(func=run_export)


def run_plan(args) -> int:
    from napari_medseg.inference.cpu_plan import cpu_plan, format_table
    from napari_medseg.models import load_model

    loaded = load_model(args.model, lazy=True)  # built below; lazy only so the plan is also filed under the file
    x = None
    if args.image:
        from napari_medseg.inference.preprocess import model_input
        from napari_medseg.io import read_volume

        x, _ = model_input(read_volume(args.image), loaded.card)
    _, info = cpu_plan(loaded.network, loaded.card, x, sw_batch_size=args.sw_batch_size, recalibrate=args.recalibrate,
                       loaded=loaded)
    print(json.dumps(info, indent=1) if args.json else format_table(info))
    return 0


def run_export(args) -> int:
    from napari_medseg.inference.export import export_model

    info = export_model(args.model, args.output, fmt=args.fmt, force=args.force)
    print(f"exported {info['model']['name']} to {info['network']['file']} (+ sidecar JSON); "
          f"{info['check']['runtime']} vs PyTorch: max abs diff {info['check']['max_abs_diff_vs_pytorch']:.1e}")
    return 0
