"""A bundle's postprocessing and metadata as card fields: activation, thresholds, label rules, class names.

Softmax bundles (``Activationsd(softmax) -> Invertd -> AsDiscreted(argmax)``) are what the pipeline does by
default. Sigmoid bundles (BraTS: ``Activationsd(sigmoid) -> Invertd -> AsDiscreted(threshold) -> Lambdad``)
give overlapping regions; their ``Lambdad`` is code, so it is never run: its syntax tree is accepted only when
it is a chain ``torch.where(x[[c]] > t, value, torch.where(...), ..., 0)``, which becomes ``label_rules``
(first matching rule wins), exactly what the lambda computes on thresholded channels.
"""

from __future__ import annotations

import ast

from napari_medseg.models.card import ClassInfo
from napari_medseg.models.expressions import DEVICE, dotted

POST_KNOWN = {"Activationsd", "Invertd", "AsDiscreted", "SaveImaged", "EnsureTyped", "CopyItemsd", "ToDeviced",
              "Lambdad", "KeepLargestConnectedComponentd", "FillHolesd"}


def _arg(t: dict, key: str, res, trail: str, default=None):
    if key not in t:
        return default
    v = res.literal(t[key], f"{trail}.{key}")
    return default if v is DEVICE else v


def parse_label_merge(func) -> list[list[int]] | None:
    """``[[channel, value], ...]`` for a ``torch.where`` label-merging lambda (see the module docstring), else None."""
    if not isinstance(func, str) or not func.startswith("$"):
        return None
    try:
        tree = ast.parse(func[1:].strip(), mode="eval").body
    except SyntaxError:
        return None
    if not (isinstance(tree, ast.Lambda) and len(tree.args.args) == 1 and not tree.args.defaults):
        return None
    var = tree.args.args[0].arg
    rules: list[list[int]] = []
    node = tree.body
    while isinstance(node, ast.Call):
        if dotted(node.func) != "torch.where" or len(node.args) != 3 or node.keywords:
            return None
        cond, value, node = node.args
        channel = _thresholded_channel(cond, var)
        if channel is None or not (isinstance(value, ast.Constant) and type(value.value) is int and value.value > 0):
            return None
        rules.append([channel, int(value.value)])
    if not (isinstance(node, ast.Constant) and node.value == 0) or not rules:
        return None
    return rules


def _thresholded_channel(cond, var: str) -> int | None:
    """c for ``x[[c]] > t`` / ``x[c] > t`` with 0 <= t < 1 (true exactly where the binary channel c is 1)."""
    if not (isinstance(cond, ast.Compare) and len(cond.ops) == 1 and isinstance(cond.ops[0], ast.Gt)):
        return None
    sub, (thr,) = cond.left, cond.comparators
    if not (isinstance(thr, ast.Constant) and isinstance(thr.value, (int, float)) and 0 <= thr.value < 1):
        return None
    if not (isinstance(sub, ast.Subscript) and isinstance(sub.value, ast.Name) and sub.value.id == var):
        return None
    idx = sub.slice
    if isinstance(idx, ast.List) and len(idx.elts) == 1:
        idx = idx.elts[0]
    if isinstance(idx, ast.Constant) and type(idx.value) is int and idx.value >= 0:
        return int(idx.value)
    return None


def translate_post(items: list[dict], res, card: dict, warnings: list[str], out_channels: int) -> None:
    from napari_medseg.models.bundle import target_name

    activation, threshold, rules, discrete = "softmax", None, None, False
    for i, t in enumerate(items):
        trail = f"postprocessing[{i}]"
        name = target_name(t.get("_target_"), trail, res.where)
        if name == "Activationsd":
            if _arg(t, "sigmoid", res, trail, False) is True:
                activation = "sigmoid"
        elif name == "AsDiscreted":
            thr = _arg(t, "threshold", res, trail)
            if thr is None and _arg(t, "threshold_values", res, trail, False) is True:  # MONAI < 0.9 spelling
                thr = _arg(t, "logit_thresh", res, trail, 0.5)
            if isinstance(thr, (int, float)) and not isinstance(thr, bool):
                threshold = float(thr)
            discrete = discrete or _arg(t, "argmax", res, trail, False) is True
        elif name == "Invertd" and discrete:  # labels (not probabilities) go back to the image grid
            card["invert_labels"] = True
        elif name == "Lambdad":
            parsed = parse_label_merge(t.get("func"))
            if parsed is not None:
                rules = parsed
            else:
                warnings.append(f"bundle postprocessing Lambdad {str(t.get('func'))[:80]!r} is code; it is not run")
        elif name == "KeepLargestConnectedComponentd":
            labels = _arg(t, "applied_labels", res, trail)
            card["keep_largest"] = [int(v) for v in (labels if isinstance(labels, list) else [labels])] if labels else ["*"]
        elif name == "FillHolesd":
            card["fill_holes"] = True
        elif name not in POST_KNOWN:
            warnings.append(f"bundle postprocessing transform {name!r} is not applied by napari-medseg")
    if activation == "sigmoid":
        if rules is None:
            rules = [[c, c + 1] for c in reversed(range(out_channels))]
            warnings.append("sigmoid bundle without a recognised label-merging Lambdad: channel c becomes label c + 1, "
                            "the last channel winning where regions overlap")
        bad = [c for c, _ in rules if c >= out_channels]
        if bad:
            from napari_medseg.errors import ModelError

            raise ModelError(f"{res.where}: the postprocessing Lambdad reads channel {bad[0]}, but the network has "
                             f"{out_channels} output channels")
        card.update(activation="sigmoid", threshold=0.5 if threshold is None else threshold, label_rules=rules)


def _channel_def(meta: dict, io: str, key: str) -> dict:
    node = ((meta.get("network_data_format") or {}).get(io) or {}).get(key) or {}
    cd = node.get("channel_def") if isinstance(node, dict) else None
    return cd if isinstance(cd, dict) else {}


def class_infos(meta: dict, card: dict, out_channels: int) -> list[ClassInfo]:
    """Foreground classes: channel c -> value c (softmax) or the label rules' values (sigmoid)."""
    chdef = _channel_def(meta, "outputs", "pred")

    def name(c):
        n = chdef.get(str(c), chdef.get(c))
        return str(n) if n else None

    if card.get("activation") == "sigmoid":
        return [ClassInfo(int(v), name(c) or f"class_{v}") for c, v in sorted(card["label_rules"], key=lambda r: r[1])]
    return [ClassInfo(c, name(c) or f"class_{c}") for c in range(1, out_channels)]


def input_channel_names(meta: dict, in_channels: int) -> list[str]:
    """Input channel names in network order from ``network_data_format.inputs.image.channel_def`` ([] if absent)."""
    chdef = _channel_def(meta, "inputs", "image")
    names = [chdef.get(str(c), chdef.get(c)) for c in range(in_channels)]
    if in_channels < 2 or not any(names):
        return []
    return [str(n) if n else f"channel {c}" for c, n in enumerate(names)]
