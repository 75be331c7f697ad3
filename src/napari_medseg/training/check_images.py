"""The class check on other recent images: what the new model predicts there, per class, against its parent.

A fine-tune on one image may make the model forget a class on *other* images even when the fine-tuned image
still looks right. `finetune(..., check_images=[...])` segments up to `MAX_CHECK_IMAGES` other
images with the parent before training and with the new model after it, and compares each class's predicted
volume (`safety.compare_classes`, no corrected slices there). The cost is bounded: each image is first put on
the model's own grid (the network sees nothing finer; labels stay there, no inversion to a fine source grid),
and images are taken in order only while the measured parent passes, doubled for the new model's pass, stay
within `CHECK_BUDGET_SHARE` of the budget. Skipped images are named in the result.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

from napari_medseg.errors import MedsegError
from napari_medseg.volume import Volume

#: at most this many other images are checked
MAX_CHECK_IMAGES = 3
#: the other-image checks (parent and new model passes together) take at most this share of the budget
CHECK_BUDGET_SHARE = 0.25


@dataclass
class CheckImage:
    name: str
    volume: Volume  # on the model grid
    parent_labels: object = None
    seconds: float = 0.0  # the parent's pass


@dataclass
class CheckSet:
    images: list[CheckImage] = field(default_factory=list)
    notes: list[str] = field(default_factory=list)  # images skipped, and why


def _named(item, n: int) -> tuple[str, object]:
    if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str):
        return item
    if isinstance(item, Volume):
        src = item.meta.get("source_path")
        return (Path(str(src)).name if src else f"check image {n}"), item
    return Path(str(item)).name or str(item), item


def parent_pass(items, start, config, clock):
    """Step generator: read each check image, put it on the model grid, segment it with the parent."""
    from napari_medseg.inference.preprocess import to_model_grid
    from napari_medseg.io import read_volume
    from napari_medseg.training.job import timed_segment

    out = CheckSet()
    items = list(items or ())
    if not items:
        return out
    if start.parent is None or not config.class_check:
        out.notes.append("other images were not checked (no parent model to compare with)")
        return out
    cap = MAX_CHECK_IMAGES
    if len(items) > cap:
        out.notes.append(f"{len(items) - cap} other image(s) not checked (at most {cap})")
        items = items[:cap]
    limit = None if clock.budget is None else CHECK_BUDGET_SHARE * clock.budget
    spent = 0.0
    for n, item in enumerate(items, start=1):
        name, vol = _named(item, n)
        if limit is not None and 2 * spent >= limit:
            out.notes.append(f"{name} not checked: the other-image checks reached their share of the budget")
            continue
        t = clock.clock()
        try:
            vol = vol if isinstance(vol, Volume) else read_volume(vol)
            small = to_model_grid(vol, start.parent_card, interpolation="linear")
            res, s = yield from timed_segment(small, start.parent_net, start.parent_card,
                                              f"check: the parent segments {name}", clock, "check images (parent)")
        except MedsegError as e:
            out.notes.append(f"{name} not checked: {e}")
            continue
        spent += clock.clock() - t
        out.images.append(CheckImage(name, small, res.labels.array, s))
    clock.reserve["check images"] = sum(c.seconds for c in out.images)
    return out


def new_pass(checks: CheckSet, net, card, config, clock) -> dict:
    """Step generator: the new model on each checked image; returns ``{image name: compare_classes rows}``."""
    from napari_medseg.training.job import timed_segment
    from napari_medseg.training.safety import compare_classes

    out = {}
    classes = {v: n for v, n in card.class_names().items() if int(v) != 0}
    for c in checks.images:
        res, _ = yield from timed_segment(c.volume, net, card, f"check: the new model segments {c.name}", clock,
                                          "check images (new model)")
        out[c.name] = compare_classes(c.parent_labels, res.labels.array, classes,
                                      float(c.volume.voxel_volume_mm3) / 1000.0, [], config, image=c.name)
    return out
