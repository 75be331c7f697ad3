"""``medseg train``, ``medseg finetune`` and ``medseg models`` (a thin layer over napari_medseg.training)."""

from __future__ import annotations

import json
import sys

from napari_medseg.errors import InputError


def _ints(text: str, what: str, n: int | None = None) -> tuple[int, ...]:
    try:
        vals = tuple(int(v) for v in str(text).replace("x", ",").split(",") if v.strip())
    except ValueError as e:
        raise InputError(f"{what} must be comma-separated integers, got {text!r}") from e
    if n is not None and len(vals) != n:
        raise InputError(f"{what} needs {n} values, got {text!r}")
    return vals


def _floats(text: str, what: str, n: int) -> tuple[float, ...]:
    try:
        vals = tuple(float(v) for v in str(text).split(",") if v.strip())
    except ValueError as e:
        raise InputError(f"{what} must be comma-separated numbers, got {text!r}") from e
    if len(vals) == 1:
        vals = vals * n
    if len(vals) != n:
        raise InputError(f"{what} needs 1 or {n} values, got {text!r}")
    return vals


def parse_map(text: str | None) -> dict[int, int] | None:
    """``"5:1,1:2,26-33:6"`` -> {5: 1, 1: 2, 26: 6, ..., 33: 6}."""
    if not text:
        return None
    out: dict[int, int] = {}
    for part in text.split(","):
        src, sep, dst = part.strip().partition(":")
        try:
            lo, _, hi = src.partition("-")
            for v in range(int(lo), int(hi or lo) + 1):
                out[v] = int(dst)
        except ValueError as e:
            raise InputError(f"bad --map entry {part!r}: expected SRC:DST or LO-HI:DST (e.g. 5:1,26-33:6)") from e
        if not sep:
            raise InputError(f"bad --map entry {part!r}: expected SRC:DST")
    return out


def parse_classes(text: str | None) -> dict[int, str] | None:
    """``"1:liver,2:spleen"`` -> {1: "liver", 2: "spleen"}."""
    if not text:
        return None
    out = {}
    for part in text.split(","):
        v, sep, name = part.strip().partition(":")
        if not sep or not v.strip().isdigit() or not name.strip():
            raise InputError(f"bad --classes entry {part!r}: expected VALUE:NAME (e.g. 1:liver)")
        out[int(v)] = name.strip()
    return out


class _Bar:
    """tqdm progress bar fed with TrainProgress (to stderr)."""

    def __init__(self, quiet: bool):
        self.quiet, self.bar, self.stage = quiet, None, None

    def __call__(self, p):
        if self.quiet:
            return
        from tqdm import tqdm

        if self.bar is None or p.stage != self.stage:
            if self.bar is not None:
                self.bar.close()
            self.bar, self.stage = tqdm(total=p.total, desc=p.stage or "train", file=sys.stderr, leave=False), p.stage
        self.bar.n = p.done
        post = {}
        if getattr(p, "loss", None) is not None:
            post["loss"] = f"{p.loss:.3f}"
        if getattr(p, "val_dice", None) is not None:
            post["val_dice"] = f"{p.val_dice:.3f}"
        self.bar.set_postfix(post, refresh=False)
        self.bar.refresh()

    def close(self):
        if self.bar is not None:
            self.bar.close()


def _train_config(args, base):
    import dataclasses

    upd = {}
    if args.steps is not None:
        upd["steps"] = args.steps
    if args.time_budget is not None:
        upd["time_budget_s"] = args.time_budget
    if args.lr is not None:
        upd["lr"] = args.lr
    if getattr(args, "patch", None):
        upd["patch_size"] = _ints(args.patch, "--patch", 3)
    if getattr(args, "batch", None):
        upd["batch_size"] = args.batch
    if args.threads:
        upd["num_threads"] = args.threads
    if getattr(args, "freeze_encoder", False):
        upd["freeze_encoder"] = True
    if getattr(args, "seed", None) is not None:
        upd["seed"] = args.seed
    return dataclasses.replace(base, **upd)


def cmd_train(args) -> int:
    from napari_medseg.training.config import TrainConfig
    from napari_medseg.training.train import train

    files = list(args.pairs)
    if len(files) % 2:
        raise InputError(f"give IMAGE LABELS pairs; got {len(files)} path(s): {files}")
    images, labels = files[0::2], files[1::2]
    val = args.val or []
    cfg = _train_config(args, TrainConfig(time_budget_s=None))
    arch = {}
    if args.spacing:
        arch["spacing"] = _floats(args.spacing, "--spacing", 3)
    if args.channels:
        arch["channels"] = _ints(args.channels, "--channels")
        arch["strides"] = (2,) * (len(arch["channels"]) - 1)
    bar = _Bar(args.quiet)
    try:
        res = train(images, labels, args.output, classes=parse_classes(args.classes), config=cfg,
                    label_map=parse_map(args.map), val_images=[v[0] for v in val], val_labels=[v[1] for v in val],
                    name=args.name, force=args.force, progress=bar, **arch)
    finally:
        bar.close()
    print(f"saved {res.path} ({res.log.steps} steps, {res.log.elapsed_s:.0f} s, stopped by {res.log.stopped_by})")
    if res.metrics:
        print(json.dumps(res.metrics, indent=1))
    return 0


def cmd_finetune(args) -> int:
    import dataclasses

    from napari_medseg.io import read_volume
    from napari_medseg.training.config import FinetuneConfig
    from napari_medseg.training.finetune import finetune, parse_slices

    if args.name and args.output:
        raise InputError("give either --name (a new version in the models home) or -o DIR, not both")
    if args.name:
        from napari_medseg.models.registry import validate_model_name

        validate_model_name(args.name)
    image = read_volume(args.image)
    labels = read_volume(args.labels)
    base = FinetuneConfig()
    fcfg = dataclasses.replace(base, train=_train_config(args, base.train))
    if args.holdout is not None:
        fcfg = dataclasses.replace(fcfg, holdout=args.holdout)
    if args.from_scratch and args.lr is not None:
        fcfg = dataclasses.replace(fcfg, scratch_lr=args.lr)
    activate = {"auto": "auto", "yes": True, "no": False}[args.activate]
    bar = _Bar(args.quiet)
    try:
        res = finetune(image, labels, parse_slices(args.slices), model=args.model, from_scratch=args.from_scratch,
                       classes=parse_classes(args.classes), config=fcfg, name=args.name, activate=activate,
                       output=args.output, force=args.force, progress=bar,
                       allow_class_change=getattr(args, "allow_class_change", False),
                       check_images=getattr(args, "check_image", None) or ())
    finally:
        bar.close()
    print(res.summary())
    print(f"model: {res.model_path}")
    return 0


def cmd_models(args) -> int:
    from napari_medseg.training import versions

    if getattr(args, "rollback", None):
        version = versions.roll_back(args.rollback)
        print(f"{args.rollback}@{version} is active again (the previously active version)")
        return 0
    if args.activate:
        name, version = versions.parse_spec(args.activate)
        path = versions.activate(name, version)
        print(f"{name}@{version} is now active ({path})")
        return 0
    if args.history:
        rows = versions.history(args.history)
        if args.json:
            print(json.dumps(rows, indent=1, default=str))
            return 0
        print(f"versions of {args.history!r} (oldest first; * = active):")
        for r in rows:
            m = r.get("metrics") or {}
            before, after = m.get("before") or {}, m.get("after") or {}
            dice = ""
            if after.get("dice_mean") is not None:
                b = before.get("dice_mean")
                dice = f" held-out Dice {'n/a' if b is None else f'{b:.3f}'} -> {after['dice_mean']:.3f}"
            sl = r.get("slices") or {}
            n_sl = len(sl.get("train", [])) + len(sl.get("heldout", [])) if isinstance(sl, dict) else 0
            print(
                f" {'*' if r['active'] else ' '} {r['version']:<8} {r.get('date') or '':<26}"
                f" parent={r.get('parent') or '-'}{f' slices={n_sl}' if n_sl else ''}{dice}"
            )
        return 0
    from napari_medseg.models.registry import list_models

    rows = list_models()
    if args.json:
        print(json.dumps(rows, indent=1, default=str))
        return 0
    if not rows:
        print("no models installed")
        return 0
    print("models (* = active version; use NAME or NAME@VERSION with --model):")
    for r in rows:
        extra = " (built-in)" if r.get("builtin") else ""
        classes = ", ".join(n for v, n in sorted((r.get("classes") or {}).items()) if int(v) != 0)
        print(f" {'*' if r['active'] else ' '} {r['name']}@{r['version']}{extra}  [{classes}]  {r['path']}")
    return 0


def _common_train_args(p):
    p.add_argument("--steps", type=int, help="optimiser steps (upper bound)")
    p.add_argument("--time-budget", type=float, metavar="SECONDS", help="stop after this many seconds")
    p.add_argument("--lr", type=float, help="learning rate (AdamW)")
    p.add_argument("--patch", help="patch size i,j,k in model voxels (multiples of 8)")
    p.add_argument("--batch", type=int, help="patches per step")
    p.add_argument("--threads", type=int, help="CPU threads for torch")
    p.add_argument("--seed", type=int)
    p.add_argument("--classes", help="class names VALUE:NAME,... (default: from the label file)")
    p.add_argument("--force", action="store_true", help="overwrite an existing -o output")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress bar")


def register(sub) -> None:
    p = sub.add_parser("train", help="train a model package on fully labelled volumes",
                       description="Train a MONAI UNet model package on IMAGE LABELS pairs.")
    p.add_argument("pairs", nargs="+", metavar="IMAGE LABELS", help="image and label files, in pairs")
    p.add_argument("-o", "--output", required=True, help="model package folder (or .zip) to write")
    p.add_argument("--map", help="label remapping SRC:DST,... (e.g. 5:1,1:2,26-33:6); unlisted values -> 0")
    p.add_argument("--val", nargs=2, action="append", metavar=("IMAGE", "LABELS"), help="held-out pair (repeatable)")
    p.add_argument("--spacing", help="model spacing in mm: one value or i,j,k (default 2)")
    p.add_argument("--channels", help="UNet channels per level, e.g. 16,32,64,128")
    p.add_argument("--name", help="model name in its card (default: output file name)")
    _common_train_args(p)
    p.set_defaults(func=cmd_train)

    p = sub.add_parser("finetune", help="fine-tune a model on corrected slices (or train a new one)",
                       description="Fine-tune on the corrected slices of LABELS; only those voxels are used.")
    p.add_argument("image")
    p.add_argument("labels")
    p.add_argument("--slices", required=True,
                   help="corrected slices AXIS:INDEX,... with AXIS z|y|x (z: 3rd NIfTI axis / DICOM slice order)")
    p.add_argument("--model", default=None, help="parent model: NAME, NAME@VERSION or path (default: default)")
    p.add_argument("--from-scratch", action="store_true", help="train a new model for the label values present")
    p.add_argument("--freeze-encoder", action="store_true", help="train only the decoder of the parent")
    p.add_argument("--holdout", type=int, help="corrected slices held out for the safety check (default: auto)")
    p.add_argument("--activate", choices=("auto", "yes", "no"), default="auto",
                   help="auto: only if not worse than the parent on held-out slices and no class vanishes, "
                        "shrinks by more than half or doubles elsewhere in the image")
    p.add_argument("--check-image", action="append", default=[], metavar="PATH",
                   help="another recent image on which the new model must not lose a class either (repeatable; "
                        "at most 3, within a quarter of the time budget)")
    p.add_argument("--allow-class-change", action="store_true",
                   help="activate (auto) even when a class changes drastically outside the corrected slices")
    g = p.add_mutually_exclusive_group()
    g.add_argument("--name", help="save as a new version of this model name (default: the parent's name)")
    g.add_argument("-o", "--output", help="write the package to this folder instead of the models home")
    _common_train_args(p)
    p.set_defaults(func=cmd_finetune)

    if "models" not in getattr(sub, "choices", {}):
        p = sub.add_parser("models", help="list models and versions; show history; roll back",
                           description="List built-in and user models (* marks the active version).")
        g = p.add_mutually_exclusive_group()
        g.add_argument("--history", metavar="MODEL", help="show the version chain of MODEL")
        g.add_argument("--activate", metavar="NAME@VERSION", help="make this version active (roll back/forward)")
        g.add_argument("--rollback", metavar="MODEL", help="make the previously active version of MODEL active again")
        p.add_argument("--json", action="store_true", help="machine-readable output")
        p.set_defaults(func=cmd_models)
