"""``medseg models pull NAME`` and ``medseg models zoo``: MONAI Model Zoo bundles by name."""

from __future__ import annotations

import sys


def register(sub) -> None:
    models = sub.choices.get("models") if hasattr(sub, "choices") else None
    if models is None:
        return
    zsub = models.add_subparsers(dest="models_command", metavar="{pull,zoo}")
    p = zsub.add_parser("pull", help="download a MONAI Model Zoo bundle into the models home",
                        description="Download bundle NAME (latest, or --version) from the MONAI Model Zoo, verify "
                        "the zoo's checksum and store it as <models home>/models/NAME/VERSION.zip.")
    p.add_argument("name", metavar="NAME", help="bundle name, e.g. spleen_ct_segmentation")
    p.add_argument("--version", default=None, help="bundle version (default: the latest)")
    p.add_argument("--index", default=None, metavar="URL", help="zoo index (model_info.json) URL (default: "
                   "$MEDSEG_ZOO_INDEX or the MONAI Model Zoo on GitHub)")
    p.add_argument("--force", action="store_true", help="download again even if that version is stored")
    p.add_argument("--quiet", action="store_true", help="no progress bar")
    p.set_defaults(func=cmd_pull)
    z = zsub.add_parser("zoo", help="list the MONAI Model Zoo's 3D segmentation bundles")
    z.add_argument("--all", action="store_true", help="list every bundle, not only 3D segmentation ones")
    z.add_argument("--index", default=None, metavar="URL")
    z.set_defaults(func=cmd_zoo)


def cmd_pull(args) -> int:
    from napari_medseg.models.zoo import pull_model

    bar = None

    def progress(p):
        nonlocal bar
        if args.quiet or p.stage != "download":
            return
        if bar is None:
            from tqdm import tqdm

            bar = tqdm(total=p.total, desc=args.name, unit="B", unit_scale=True, unit_divisor=1024, file=sys.stderr)
        bar.total = p.total
        bar.n = p.done
        bar.refresh()

    try:
        path = pull_model(args.name, args.version, url=args.index, force=args.force, progress=progress)
    finally:
        if bar is not None:
            bar.close()
    print(f"{args.name}: stored in {path}; use it with --model {args.name}")
    return 0


def cmd_zoo(args) -> int:
    from napari_medseg.models.zoo import list_zoo_bundles

    rows = list_zoo_bundles(args.index, segmentation_only=not args.all)
    for r in rows:
        print(f"{r['name']:<50} {r['latest']:<10} ({len(r['versions'])} versions)")
    return 0
