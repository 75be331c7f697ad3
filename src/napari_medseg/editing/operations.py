"""The registry of label operations offered by the Correction widget (no Qt): label, function, parameters.

An `Operation` turns an `OpContext` (the labels, the class, the slice shown, the scope, the spacing, the
slices the user painted) plus its parameter values into an `Edit`. The widget builds one button per
registered operation and one control per `Param` (a parameter shared by several operations, like
``distance_mm``, gets one control). To add an operation: write a pure function in
:mod:`napari_medseg.editing` returning an `Edit`, then `register` an `Operation` wrapping it::

    register(Operation("open", "Open", lambda ctx, distance_mm: my_open(ctx.labels, ctx.label, distance_mm,
                                                                          where=ctx.where, spacing=ctx.spacing),
                       params=(DISTANCE,)))
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Optional

from napari_medseg import editing
from napari_medseg.editing.edit import Edit
from napari_medseg.errors import InputError

AXIS_NAMES = {0: "z", 1: "y", 2: "x"}


@dataclass(frozen=True)
class Param:
    """One parameter of an operation: ``kind`` is "float" (with unit ``suffix``), "bool" or "class"."""

    name: str
    kind: str = "float"
    default: Any = None
    minimum: float = 0.0
    maximum: float = 1e7
    decimals: int = 1
    suffix: str = ""
    label: str = ""  # shown next to a "bool" control


@dataclass
class OpContext:
    """What an operation works on: ``where`` is None (whole volume) or ``(axis, index)`` (one slice)."""

    labels: Any
    label: int
    axis: int
    index: int
    scope: str  # "slice" or "volume"
    spacing: Any = None
    painted: list[int] = field(default_factory=list)  # slices along ``axis`` the user painted

    @property
    def where(self) -> Optional[tuple[int, int]]:
        return (self.axis, self.index) if self.scope == "slice" else None


@dataclass(frozen=True)
class Operation:
    name: str
    label: str  # the button text
    run: Callable[..., Edit]  # run(ctx, **param values) -> Edit
    params: tuple[Param, ...] = ()
    #: works on the whole volume whatever the scope (the widget snapshots the labels and runs it in a worker)
    whole_volume: bool = False
    #: checks the context before the (possibly long) work starts; raises InputError
    check: Optional[Callable[[OpContext, dict], None]] = None

    def values(self, overrides: dict | None = None) -> dict:
        """The parameter values: the defaults, replaced by ``overrides`` (keyed by parameter name)."""
        overrides = overrides or {}
        return {p.name: overrides.get(p.name, p.default) for p in self.params}

    def prepare(self, ctx: OpContext, values: dict) -> Callable[[], Edit]:
        """Check now, and return the zero-argument function that computes the `Edit`."""
        if self.check is not None:
            self.check(ctx, values)
        return lambda: self.run(ctx, **values)


OPERATIONS: dict[str, Operation] = {}


def register(op: Operation) -> Operation:
    """Add (or replace) an operation; the widget shows it in registration order."""
    OPERATIONS[op.name] = op
    return op


def get_operation(name: str) -> Operation:
    if name not in OPERATIONS:
        raise InputError(f"unknown operation '{name}'; choose one of {', '.join(OPERATIONS)}")
    return OPERATIONS[name]


# ---------------------------------------------------------------------------------------- parameters
FILL_3D = Param("fill_3d", "bool", False, label="3D")
MIN_VOLUME = Param("min_volume_mm3", "float", 100.0, 0.0, 1e7, 0, " mm³")
DISTANCE = Param("distance_mm", "float", 2.0, 0.0, 100.0, 1, " mm")
TARGET = Param("target", "class", None)


# ---------------------------------------------------------------------------------------- checks
def _check_painted(ctx: OpContext, values: dict) -> None:
    if len(ctx.painted) < 2:
        raise InputError(
            f"interpolation fills the slices between slices you painted: paint class {ctx.label} on at least two "
            f"slices along {AXIS_NAMES.get(ctx.axis, ctx.axis)} first (painted so far: {ctx.painted or 'none'})")


def _check_previous(ctx: OpContext, values: dict) -> None:
    if ctx.index == 0:
        raise InputError(f"slice {ctx.index} is the first along {AXIS_NAMES.get(ctx.axis, ctx.axis)}: "
                         "there is no previous slice")


def _check_target(ctx: OpContext, values: dict) -> None:
    if values.get("target") is None:
        raise InputError("choose the class to relabel to")


# ---------------------------------------------------------------------------------------- the operations
def _scoped(fn, **fixed):
    """An operation calling ``fn(labels, label, *args, where=, spacing=)`` with the parameter values."""
    def run(ctx: OpContext, **values):
        return fn(ctx.labels, ctx.label, *values.values(), where=ctx.where, spacing=ctx.spacing, **fixed)
    return run


register(Operation("interpolate", "Interpolate between painted slices",
                   lambda ctx: editing.interpolate_slices(ctx.labels, ctx.label, ctx.axis, spacing=ctx.spacing,
                                                          slices=ctx.painted),
                   whole_volume=True, check=_check_painted))
register(Operation("fill_holes", "Fill holes",
                   lambda ctx, fill_3d: editing.fill_holes(ctx.labels, ctx.label, where=ctx.where, spacing=ctx.spacing,
                                                           per_slice_axis=None if fill_3d else ctx.axis),
                   params=(FILL_3D,)))
register(Operation("remove_islands", "Remove islands <", _scoped(editing.remove_islands), params=(MIN_VOLUME,)))
register(Operation("keep_largest", "Keep largest component", _scoped(editing.keep_largest)))
register(Operation("dilate", "Dilate", _scoped(editing.dilate), params=(DISTANCE,)))
register(Operation("erode", "Erode", _scoped(editing.erode), params=(DISTANCE,)))
register(Operation("smooth", "Smooth", _scoped(editing.smooth), params=(DISTANCE,)))
register(Operation("copy_previous", "Copy previous slice",
                   lambda ctx: editing.copy_slice(ctx.labels, ctx.axis, ctx.index, label=ctx.label),
                   check=_check_previous))
register(Operation("relabel", "Relabel class as",
                   lambda ctx, target: editing.relabel(ctx.labels, ctx.label, int(target), where=ctx.where),
                   params=(TARGET,), check=_check_target))
